"""`pegabridge agents classify` and `refresh-ranges`, driven through Typer's runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pegabridge.cli import agents as agents_cli
from pegabridge.cli.agents import app
from pegabridge.tracking.relay_ranges import RANGES_PATH_ENV, RelayRangesError

SAMPLE = Path(__file__).parent.parent / "samples" / "tracking" / "relay-ranges.txt"
GMAIL = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 "
    "(via ggpht.com GoogleImageProxy)"
)


def classify(stdin: str, *args: str) -> list[dict[str, object]]:
    result = CliRunner().invoke(
        app, ["classify", "--ranges", str(SAMPLE), *args], input=stdin
    )
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_classify_prints_one_json_line_per_input_line() -> None:
    records = classify(f"{GMAIL}\nMozilla/5.0\t104.28.28.76\tGET\n")

    assert records[0] == {
        "os": "",
        "browser": "Gmail",
        "machine_generated": False,
        "reason": "",
        "detail": "",
    }
    assert records[1]["reason"] == "apple-mpp-relay"


def test_classify_reads_the_method_after_the_address() -> None:
    records = classify(f"{GMAIL}\t66.249.84.10\tHEAD\n")

    assert records[0]["reason"] == "head-request"


def test_classify_can_judge_lines_as_clicks() -> None:
    records = classify("Mozilla/5.0\t203.0.113.5\n", "--kind", "click")

    assert records[0]["reason"] == "scanner-agent"


def test_classify_keeps_empty_lines_as_empty_agents() -> None:
    records = classify("\n")

    assert records == [
        {
            "os": "",
            "browser": "",
            "machine_generated": True,
            "reason": "empty-agent",
            "detail": "",
        }
    ]


def test_refresh_ranges_without_a_file_explains_how_to_name_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(RANGES_PATH_ENV, raising=False)

    result = CliRunner().invoke(app, ["refresh-ranges"])

    assert result.exit_code == 2
    assert RANGES_PATH_ENV in result.stderr


def test_refresh_ranges_writes_the_file_it_is_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[tuple[Path, str]] = []

    def fake_refresh(path: Path, url: str) -> list[str]:
        calls.append((path, url))
        return ["10.0.0.0/8"]

    monkeypatch.setattr(agents_cli, "refresh_ranges_file", fake_refresh)
    target = tmp_path / "relay.txt"

    result = CliRunner().invoke(
        app, ["refresh-ranges", "--file", str(target), "--url", "https://x.example/r"]
    )

    assert result.exit_code == 0, result.output
    assert calls == [(target, "https://x.example/r")]


def test_refresh_ranges_reports_a_failed_download(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def failing_refresh(path: Path, url: str) -> None:
        raise RelayRangesError("cannot fetch range list from x: 503")

    monkeypatch.setattr(agents_cli, "refresh_ranges_file", failing_refresh)

    result = CliRunner().invoke(app, ["refresh-ranges", "--file", str(tmp_path / "r")])

    assert result.exit_code == 1
    assert "cannot fetch" in result.stderr
