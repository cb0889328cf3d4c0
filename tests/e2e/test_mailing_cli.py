"""``pegabridge mailing``: import, content checks and a quick send into .eml files."""

from __future__ import annotations

import os
import subprocess
from email import message_from_bytes, policy
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PEGABRIDGE = str(REPO / ".venv" / "bin" / "pegabridge")
SAMPLES = REPO / "tests" / "samples" / "mailing"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    values = {
        **os.environ,
        "PEGABRIDGE_VAR_DIR": str(tmp_path / "var"),
        "PEGABRIDGE_SECRET_KEY": "e2e-secret",
        "COLUMNS": "200",
    }
    values.pop("PEGABRIDGE_DATABASE_URL", None)
    values.pop("PEGABRIDGE_SMTP_HOST", None)
    _cli(values, "portal", "create", "--id", "5", "--name", "Portal")
    _cli(values, "brand", "create", "--portal", "5", "--id", "1", "--name", "Brand")
    return values


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PEGABRIDGE, *args], env=env, capture_output=True, text=True, timeout=60
    )


def _create_content(
    env: dict[str, str], html: Path
) -> subprocess.CompletedProcess[str]:
    return _cli(
        env,
        "mailing", "content", "create", "--portal", "5", "--brand", "1",
        "--name", "News", "--subject", "Hello", "--html", str(html),
    )  # fmt: skip


def test_a_csv_import_lists_each_broken_row_and_imports_the_rest(
    env: dict[str, str],
) -> None:
    done = _cli(
        env,
        "mailing", "customers", "import", str(SAMPLES / "customers-broken.csv"),
        "--portal", "5", "--brand", "1",
    )  # fmt: skip

    assert "created 2, updated 0, rejected 3" in done.stdout
    assert "duplicate of an earlier row" in done.stdout


def test_a_strict_import_of_a_broken_csv_imports_nothing(env: dict[str, str]) -> None:
    done = _cli(
        env,
        "mailing", "customers", "import", str(SAMPLES / "customers-broken.csv"),
        "--portal", "5", "--brand", "1", "--strict",
    )  # fmt: skip

    assert done.returncode == 1
    assert "nothing was imported" in done.stderr


def test_a_csv_in_a_legacy_code_page_is_refused_without_a_traceback(
    env: dict[str, str], tmp_path: Path
) -> None:
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("email,first_name\njoe@example.org,Jörg\n".encode("latin-1"))

    done = _cli(
        env,
        "mailing", "customers", "import", str(latin1), "--portal", "5", "--brand", "1",
    )  # fmt: skip

    assert done.returncode == 1
    assert "line 2 of the CSV is not UTF-8" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_content_whose_template_is_a_folder_is_refused_without_a_traceback(
    env: dict[str, str], tmp_path: Path
) -> None:
    done = _create_content(env, html=tmp_path)

    assert done.returncode == 2
    assert "Traceback" not in done.stderr


def test_a_content_with_a_syntax_error_is_refused_with_its_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text("<p>\n{% for x in y %}\n", encoding="utf-8")

    done = _create_content(env, html=broken)

    assert done.returncode == 1
    assert "html, line 2" in done.stdout + done.stderr


def test_a_quick_send_without_a_relay_writes_one_eml_file_per_mailable_customer(
    env: dict[str, str],
) -> None:
    _cli(
        env,
        "mailing", "customers", "import", str(SAMPLES / "customers-broken.csv"),
        "--portal", "5", "--brand", "1",
    )  # fmt: skip
    _cli(
        env,
        "mailing", "content", "create", "--portal", "5", "--brand", "1",
        "--name", "Offer", "--subject", "Offer {{ UniqueOfferId }}",
        "--html", str(SAMPLES / "offer.html"),
        "--var", "UniqueOfferId=none", "--var", "InteractionId=0",
    )  # fmt: skip

    done = _cli(
        env,
        "mailing", "send", "quick", "--portal", "5", "--brand", "1", "--content", "1",
        "--var", "UniqueOfferId=OF-9", "--var", "InteractionId=-563481321460449721",
    )  # fmt: skip

    files = sorted((Path(env["PEGABRIDGE_VAR_DIR"]) / "outbox-mail").glob("*.eml"))
    texts = [
        message_from_bytes(f.read_bytes(), policy=policy.default)["Subject"]
        for f in files
    ]
    assert done.returncode == 0, done.stderr
    assert texts == ["Offer OF-9", "Offer OF-9"]
