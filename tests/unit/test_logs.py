"""Where pegabridge's log lines go."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from pegabridge import logs


def test_logs_follow_standard_error_when_it_is_swapped_and_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logs.configure(json_lines=True)
    logging.getLogger("pegabridge.test").warning("one", extra={"event": "test.one"})
    first.close()
    monkeypatch.setattr(sys, "stderr", second)

    logging.getLogger("pegabridge.test").warning("two", extra={"event": "test.two"})

    [line] = second.getvalue().splitlines()
    assert json.loads(line)["event"] == "test.two"
