"""The `feedback` sub-app: parse prints one JSON line per file."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from pegabridge.cli.feedback import app

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "feedback"


def test_parse_prints_one_json_line_per_file() -> None:
    files = [str(SAMPLES / "dsn-user-unknown.eml"), str(SAMPLES / "arf-redacted.eml")]

    result = CliRunner().invoke(app, ["parse", *files])

    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["kind"] for line in lines] == ["bounce", "complaint"]
    assert lines[0]["recipients"][0]["bounce_type"] == "HARD"


def test_parse_refuses_a_missing_file_with_exit_code_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["parse", str(tmp_path / "absent.eml")])

    assert result.exit_code == 2


def test_report_names_the_missing_corpus_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", "--corpus", str(tmp_path)])

    assert result.exit_code == 2
