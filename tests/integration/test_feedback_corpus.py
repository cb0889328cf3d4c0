"""The parser over the real third-party corpora meets the aims of issue 6."""

from __future__ import annotations

import pytest

from pegabridge.feedback.corpus import (
    AIMS,
    CorpusMissingError,
    CorpusReport,
    corpus_files,
    run_report,
)
from pegabridge.feedback.models import FeedbackKind
from pegabridge.feedback.parse import parse_message


@pytest.fixture(scope="module")
def report() -> CorpusReport:
    try:
        result = run_report()
    except CorpusMissingError as exc:
        pytest.skip(f"bounce/complaint corpora absent: {exc}")
    for name in result.fields():
        right, total = result.share(name)
        print(f"feedback corpus {name}: {right}/{total} = {right / total:.1%}")
    return result


@pytest.mark.parametrize("field", sorted(AIMS))
def test_the_corpus_share_meets_the_aim(report: CorpusReport, field: str) -> None:
    right, total = report.share(field)

    assert total > 0
    assert right / total >= AIMS[field], (
        f"{field}: {right}/{total} = {right / total:.1%} < {AIMS[field]:.0%}"
    )


def test_every_complaint_is_read_as_a_complaint(report: CorpusReport) -> None:
    right, total = report.share("kind", "sisimai-complaints")

    assert total > 0
    assert right == total


def test_every_corpus_file_parses_to_a_report() -> None:
    try:
        files = corpus_files()
    except CorpusMissingError as exc:
        pytest.skip(f"bounce/complaint corpora absent: {exc}")

    kinds = {parse_message(path.read_bytes()).kind for path in files}

    assert FeedbackKind.BOUNCE in kinds
