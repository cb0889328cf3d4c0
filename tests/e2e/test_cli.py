"""The command line of the issue, run as the ``pegabridge`` program in a new folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Each command starts a Python process (2-3 s here), so the module as a whole is slow.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PEGABRIDGE = REPO / ".venv" / "bin" / "pegabridge"
if not PEGABRIDGE.exists():
    PEGABRIDGE = Path(sys.executable).with_name("pegabridge")
EXAMPLES = REPO / "tests" / "samples" / "source_examples.json"
PASSWORD = "Pw-0f-the-endpoint!"  # distinctive, so that any leak is found
ENDPOINT = "http://127.0.0.1:9/prweb/api/ih"


def cli_env(var_dir: Path) -> dict[str, str]:
    """The environment of a newcomer's shell: only the var folder is set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEGABRIDGE_")}
    env.update(PEGABRIDGE_VAR_DIR=str(var_dir), COLUMNS="200", NO_COLOR="1")
    return env


@dataclass
class Cli:
    """Runs ``pegabridge`` commands and keeps everything they printed."""

    var_dir: Path
    printed: list[str] = field(default_factory=list)

    def __call__(self, *args: str, stdin: str = "", ok: bool = True) -> str:
        done = subprocess.run(
            [str(PEGABRIDGE), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=cli_env(self.var_dir),
            timeout=60,
        )
        self.printed += [done.stdout, done.stderr]
        if ok and done.returncode != 0:
            raise AssertionError(f"pegabridge {' '.join(args)}: {done.stderr}")
        return done.stdout + done.stderr

    def status(self) -> list[dict[str, object]]:
        document: list[dict[str, object]] = json.loads(self("status", "--json"))
        return document


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """A var folder with portal 1746, brand 1, an API key and the app installed."""
    cli = Cli(tmp_path_factory.mktemp("cli") / "var")
    cli("portal", "create", "--id", "1746", "--name", "mokup")
    cli("brand", "create", "--portal", "1746", "--id", "1", "--name", "Mok-Up")
    cli("apikey", "create", "--portal", "1746")
    cli(
        "install", "--portal", "1746", "--brand", "1", "--endpoint", ENDPOINT,
        "--username", "pega", "--password-stdin",
        "--activities", "broadcasts,opens,clicks,bounces,complaints,unsubscribes,"
        "conversions",
        "--invoice-interval", "monthly", "--po-number", "PO-1",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    return cli


def test_apikey_create_prints_one_key_of_the_portal(cli: Cli) -> None:
    key = cli("apikey", "create", "--portal", "1746").strip()

    assert key.startswith("pb_") and len(key.split()) == 1


def test_install_makes_an_active_installation_towards_the_endpoint(cli: Cli) -> None:
    [installation] = cli.status()

    assert (installation["state"], installation["endpoint_url"]) == (
        "active",
        ENDPOINT,
    )


def test_pause_and_resume_show_in_status_with_the_reason(cli: Cli) -> None:
    cli("pause", "--portal", "1746", "--brand", "1", "--reason", "Pega maintenance")
    paused = cli.status()[0]
    cli("resume", "--portal", "1746", "--brand", "1")
    resumed = cli.status()[0]

    assert (paused["state"], paused["pause_reason"]) == ("paused", "Pega maintenance")
    assert (resumed["state"], resumed["pause_reason"]) == ("active", "")


def test_ingest_records_the_source_examples_as_waiting_events(cli: Cli) -> None:
    before = cli.status()[0]["counts"]

    cli("ingest", str(EXAMPLES))

    after = cli.status()[0]["counts"]
    assert isinstance(before, dict) and isinstance(after, dict)
    assert after.get("pending", 0) - before.get("pending", 0) == 5


def test_ingest_takes_a_file_with_one_pretty_printed_activity(
    cli: Cli, tmp_path: Path
) -> None:
    one = tmp_path / "one.json"
    one.write_text(json.dumps(json.loads(EXAMPLES.read_text())[3], indent=2))

    printed = cli("ingest", str(one), ok=False)

    assert "recorded 1 activities" in printed, printed


def test_ingest_refuses_a_file_with_a_bad_activity_and_records_nothing(
    cli: Cli, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"metric": "opens", "portal_id": 1746}\n')
    before = cli.status()[0]["counts"]

    printed = cli("ingest", str(bad), ok=False)

    assert "metric_timestamp" in printed and "brand_id" in printed
    assert cli.status()[0]["counts"] == before


def test_install_refuses_an_empty_activity_list_instead_of_sending_nothing(
    cli: Cli,
) -> None:
    printed = cli(
        "install", "--portal", "1746", "--brand", "1", "--activities", " , ",
        ok=False,
    )  # fmt: skip

    assert "at least one activity" in printed
    assert cli.status()[0]["state"] == "active"


def test_ingest_of_a_folder_says_it_cannot_be_read_not_a_traceback(
    cli: Cli, tmp_path: Path
) -> None:
    printed = cli("ingest", str(tmp_path), ok=False)

    assert "cannot be read" in printed
    assert "Traceback" not in printed


def test_install_refuses_a_cloud_metadata_endpoint_as_the_wizard_does(
    cli: Cli,
) -> None:
    printed = cli(
        "install", "--portal", "1746", "--brand", "1",
        "--endpoint", "https://169.254.169.254/latest",
        ok=False,
    )  # fmt: skip

    assert "metadata address" in printed
    assert cli.status()[0]["endpoint_url"] == ENDPOINT


def test_a_wrong_brand_gets_a_clear_error_not_a_traceback(cli: Cli) -> None:
    printed = cli("pause", "--portal", "1746", "--brand", "99", ok=False)

    assert "no Pega app installed" in printed
    assert "Traceback" not in printed


def test_the_password_never_appears_in_output_nor_in_the_var_folder(
    cli: Cli,
) -> None:
    cli("install", "--portal", "1746", "--brand", "1", "--password-stdin",
        stdin=PASSWORD + "\n")  # fmt: skip
    cli("status")

    stored = b"".join(p.read_bytes() for p in cli.var_dir.rglob("*") if p.is_file())
    assert not [text for text in cli.printed if PASSWORD in text]
    assert PASSWORD.encode() not in stored


def test_the_key_file_is_readable_by_its_owner_only(cli: Cli) -> None:
    assert (cli.var_dir / "secret.key").stat().st_mode & 0o077 == 0


CLIENT_SECRET = "Cl13nt-s3cret-0f-the-registration"  # distinctive, like PASSWORD


def cli_with_a_brand(tmp_path: Path) -> Cli:
    """A new var folder with portal 7 and its brand 1, nothing installed."""
    cli = Cli(tmp_path / "var")
    cli("portal", "create", "--id", "7", "--name", "seven")
    cli("brand", "create", "--portal", "7", "--id", "1", "--name", "Brand")
    return cli


def test_install_with_an_oauth_client_keeps_its_secret_out_of_output_and_var(
    tmp_path: Path,
) -> None:
    cli = cli_with_a_brand(tmp_path)
    cli(
        "install", "--portal", "7", "--brand", "1", "--endpoint", ENDPOINT,
        "--auth", "oauth2", "--token-url", "http://127.0.0.1:9/oauth2/v1/token",
        "--client-id", "pegabridge", "--client-secret-stdin", "--scope", "ih.write",
        "--client-auth", "post",
        stdin=CLIENT_SECRET + "\n",
    )  # fmt: skip
    [installation] = cli.status()
    printed = cli("status")

    stored = b"".join(p.read_bytes() for p in cli.var_dir.rglob("*") if p.is_file())
    assert (installation["state"], installation["auth"]) == ("active", "oauth2")
    assert "OAuth 2.0" in printed
    assert not [text for text in cli.printed if CLIENT_SECRET in text]
    assert CLIENT_SECRET.encode() not in stored


def test_an_oauth_install_without_its_secret_is_refused_in_plain_words(
    tmp_path: Path,
) -> None:
    cli = cli_with_a_brand(tmp_path)

    printed = cli(
        "install", "--portal", "7", "--brand", "1", "--endpoint", ENDPOINT,
        "--auth", "oauth2", "--token-url", "http://127.0.0.1:9/token",
        "--client-id", "pegabridge", ok=False,
    )  # fmt: skip

    assert "needs the client secret" in printed and "Traceback" not in printed
