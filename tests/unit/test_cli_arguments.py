"""Wrong arguments to the main commands end in a one-line error, never a traceback."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pegabridge.cli import app


def invoke(*args: str, stdin: str = "") -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(app, list(args), input=stdin)
    exception = None if isinstance(result.exception, SystemExit) else result.exception
    return result.exit_code, result.output, exception


def test_an_unknown_activity_names_the_choices_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PEGABRIDGE_VAR_DIR", str(tmp_path))
    code, output, exception = invoke(
        "install", "--portal", "1", "--brand", "1", "--activities", "opens,nope"
    )

    assert exception is None
    assert code == 1
    assert "unknown activity 'nope'" in output and "broadcasts" in output


@pytest.mark.parametrize("command", ["serve", "sandbox-endpoint"])
def test_a_port_beyond_65535_is_refused_before_anything_starts(command: str) -> None:
    code, output, exception = invoke(command, "--port", "99999")

    assert exception is None
    assert code == 2
    assert "--port" in output


def test_a_sandbox_endpoint_on_a_taken_port_says_so_without_a_traceback() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        code, output, exception = invoke("sandbox-endpoint", "--port", str(port))

    assert exception is None
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in output


def test_serve_on_a_port_in_use_says_so_before_printing_a_setup_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PEGABRIDGE_VAR_DIR", str(tmp_path))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, output, exception = invoke("serve", "--port", str(port))

    assert (exception, code) == (None, 1)
    assert "cannot listen" in output and "setup" not in output
