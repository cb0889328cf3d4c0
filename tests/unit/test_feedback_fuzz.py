"""parse_message never raises and never hits its own safety net, whatever the input."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pegabridge.feedback.models import FeedbackReport
from pegabridge.feedback.parse import parse_message

SAMPLES = sorted(
    (Path(__file__).resolve().parents[1] / "samples" / "feedback").glob("*.eml")
)
SEEDS = [path.read_bytes() for path in SAMPLES]

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def parse_cleanly(raw: bytes, caplog: pytest.LogCaptureFixture) -> FeedbackReport:
    """Parse and fail when the parser had to fall back on its catch-all."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pegabridge.feedback.parse"):
        report = parse_message(raw)
    failures = [
        r for r in caplog.records if getattr(r, "event", "") == "feedback.parse_failed"
    ]
    assert failures == [], failures[0].exc_text if failures else ""
    return report


@FUZZ
@given(raw=st.binary(max_size=4000))
def test_random_bytes_parse_without_error(
    raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    assert isinstance(parse_cleanly(raw, caplog), FeedbackReport)


@st.composite
def mutated_samples(draw: st.DrawFn) -> bytes:
    """A sample message with a few bytes replaced, cut, or a slice duplicated."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        operation = draw(st.sampled_from(["replace", "cut", "duplicate"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if operation == "replace" and data:
            data[position] = draw(st.integers(0, 255))
        elif operation == "cut":
            del data[position : position + draw(st.integers(1, 200))]
        else:
            data[position:position] = data[
                position : position + draw(st.integers(1, 300))
            ]
    return bytes(data)


@FUZZ
@given(raw=mutated_samples())
def test_mutated_messages_parse_without_error(
    raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    assert isinstance(parse_cleanly(raw, caplog), FeedbackReport)


@FUZZ
@given(
    fragments=st.lists(
        st.sampled_from(
            [
                b"Content-Type: multipart/report; boundary=x\r\n",
                b"Content-Type: message/delivery-status\r\n",
                b"Content-Type: message/rfc822\r\n",
                b"Content-Type: message/feedback-report\r\n",
                b"Content-Transfer-Encoding: base64\r\n",
                b"Content-Type: text/plain; charset=x-unknown\r\n",
                b"Subject: =?utf-8?B?broken?=\r\n",
                b"\r\n",
                b"--x\r\n",
                b"--x--\r\n",
                b"Final-Recipient: rfc822; a@b.example\r\n",
                b"Action: failed\r\nStatus: 5.1.1\r\n",
                b"Feedback-Type: abuse\r\n",
                b'{"notificationType":"Bounce","bounce":[1,2]}\r\n',
                b"From: MAILER-DAEMON@x.example\r\n",
                b"\xff\xfe\x00garbage\r\n",
            ]
        ),
        max_size=40,
    )
)
def test_shuffled_mime_fragments_parse_without_error(
    fragments: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    assert isinstance(parse_cleanly(b"".join(fragments), caplog), FeedbackReport)
