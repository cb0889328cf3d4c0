"""Scoring the parser against the third-party corpora in ``shared/corpora``.

Each corpus has its own expected answers and vocabulary (see the corpora README); this
module maps them to ours and records one :class:`Check` per comparison:

* ``recipient`` — Sisimai rows carry no address, so a row counts as right when the
  report has a recipient at that row's index; flufl rows compare address sets; crisp
  rows need the named recipient among ours.
* ``bounce_code`` — only where the expected enhanced code is one a server wrote (never a
  Sisimai ``x.0.9yy`` pseudo-code).
* ``bounce_type`` — Sisimai bounce rows, against Sisimai's ``hard_bounce``;
  ``bounce_type_own`` scores the same rows against our own rule applied to Sisimai's
  reason (:data:`SISIMAI_REASONS`).
* ``kind`` — every labelled Sisimai message (bounce, auto-reply, delivered, complaint).
* ``feedback_type`` — complaint rows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pegabridge.feedback import codes
from pegabridge.feedback.classify import bounce_type_for
from pegabridge.feedback.models import (
    BounceReason,
    BounceType,
    FeedbackKind,
    FeedbackReport,
)
from pegabridge.feedback.parse import parse_message

R = BounceReason

SISIMAI_REASONS: dict[str, BounceReason] = {
    "userunknown": R.USER_UNKNOWN,
    "hostunknown": R.HOST_UNKNOWN,
    "hasmoved": R.HAS_MOVED,
    "notaccept": R.NOT_ACCEPTING_MAIL,
    "mailboxfull": R.MAILBOX_FULL,
    "suspend": R.MAILBOX_DISABLED,
    "mesgtoobig": R.MESSAGE_TOO_LARGE,
    "exceedlimit": R.MESSAGE_TOO_LARGE,
    "filtered": R.CONTENT_REJECTED,
    "contenterror": R.CONTENT_REJECTED,
    "notcompliantrfc": R.CONTENT_REJECTED,
    "spamdetected": R.SPAM_DETECTED,
    "virusdetected": R.VIRUS_DETECTED,
    "policyviolation": R.POLICY_RELATED,
    "blocked": R.SENDER_BLOCKED,
    "badreputation": R.SENDER_BLOCKED,
    "requireptr": R.SENDER_BLOCKED,
    "rejected": R.SENDER_BLOCKED,
    "norelaying": R.SENDER_BLOCKED,
    "authfailure": R.AUTHENTICATION_FAILED,
    "securityerror": R.AUTHENTICATION_FAILED,
    "failedstarttls": R.AUTHENTICATION_FAILED,
    "toomanyconn": R.RATE_LIMITED,
    "speeding": R.RATE_LIMITED,
    "expired": R.EXPIRED,
    "networkerror": R.NETWORK_ERROR,
    "systemerror": R.SYSTEM_ERROR,
    "systemfull": R.SYSTEM_ERROR,
    "mailererror": R.SYSTEM_ERROR,
    "syntaxerror": R.SYSTEM_ERROR,
    "onhold": R.OTHER,
    "undefined": R.OTHER,
}
"""Sisimai's reason words in our vocabulary (for the ``bounce_type_own`` score)."""

_SISIMAI_KINDS = {
    "vacation": FeedbackKind.AUTO_REPLY,
    "delivered": FeedbackKind.DELIVERED,
    "feedback": FeedbackKind.COMPLAINT,
}
AIMS = {"recipient": 0.97, "bounce_code": 0.90, "bounce_type": 0.95}
"""The shares issue 6 asks for."""


class CorpusMissingError(FileNotFoundError):
    """The corpora folder was not found; set ``PEGABRIDGE_CORPORA`` to its path."""


@dataclass(frozen=True, slots=True)
class Check:
    """One comparison of our answer with a corpus's expected answer."""

    corpus: str
    file: str
    field: str
    expected: str
    got: str
    ok: bool


@dataclass
class CorpusReport:
    """All checks of one run, with the share right per field."""

    checks: list[Check] = field(default_factory=list)
    messages: int = 0

    def share(self, field_name: str, corpus: str | None = None) -> tuple[int, int]:
        """``(right, total)`` for one field, over all corpora or one."""
        selected = [
            check
            for check in self.checks
            if check.field == field_name and (corpus is None or check.corpus == corpus)
        ]
        return sum(check.ok for check in selected), len(selected)

    def ratio(self, field_name: str) -> float:
        """The share right for one field over all corpora (1.0 when nothing checked)."""
        right, total = self.share(field_name)
        return right / total if total else 1.0

    def misses(self) -> list[Check]:
        """Every check that failed."""
        return [check for check in self.checks if not check.ok]

    def fields(self) -> list[str]:
        """The fields checked, in first-seen order."""
        return list(dict.fromkeys(check.field for check in self.checks))

    def corpora(self) -> list[str]:
        """The corpora checked, in first-seen order."""
        return list(dict.fromkeys(check.corpus for check in self.checks))


def find_corpora(explicit: str | Path | None = None) -> Path:
    """The corpora folder: ``explicit``, ``$PEGABRIDGE_CORPORA``, or a shared default.

    Raises :class:`CorpusMissingError` naming the places tried.
    """
    repo_root = Path(__file__).resolve().parents[3]
    candidates = [
        Path(explicit) if explicit else None,
        Path(os.environ["PEGABRIDGE_CORPORA"])
        if os.environ.get("PEGABRIDGE_CORPORA")
        else None,
        Path("/work/shared/corpora"),
        repo_root.parent / "shared" / "corpora",
    ]
    tried = [path for path in candidates if path is not None]
    if explicit:
        tried = tried[:1]
    for path in tried:
        if (path / "bounces").is_dir():
            return path
    raise CorpusMissingError(
        "corpora not found in "
        + ", ".join(str(p) for p in tried)
        + "; set PEGABRIDGE_CORPORA to the folder holding bounces/ and complaints/"
    )


def run_report(root: str | Path | None = None) -> CorpusReport:
    """Parse every labelled message of the corpora and score the answers."""
    base = find_corpora(root)
    report = CorpusReport()
    _score_sisimai(report, base / "bounces" / "sisimai", "sisimai-bounces")
    _score_sisimai(report, base / "complaints" / "sisimai", "sisimai-complaints")
    _score_flufl(report, base / "bounces" / "flufl")
    _score_crisp(report, base / "bounces" / "crisp")
    return report


def corpus_files(root: str | Path | None = None) -> list[Path]:
    """Every message file of the corpora, labelled or not (for fuzzing, the bench)."""
    base = find_corpora(root)
    folders = [
        base / "bounces" / "sisimai",
        base / "bounces" / "sisimai" / "unlabelled",
        base / "complaints" / "sisimai",
        base / "complaints" / "sisimai" / "unlabelled",
        base / "bounces" / "flufl",
        base / "bounces" / "crisp",
    ]
    files: list[Path] = []
    for folder in folders:
        if folder.is_dir():
            files.extend(
                sorted(p for p in folder.iterdir() if p.suffix in (".eml", ".txt"))
            )
    return files


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def _parse_file(report: CorpusReport, path: Path) -> FeedbackReport:
    report.messages += 1
    return parse_message(path.read_bytes())


def _add(
    report: CorpusReport, corpus: str, file: str, name: str, exp: str, got: str
) -> None:
    report.checks.append(Check(corpus, file, name, exp, got, exp == got))


def _score_sisimai(report: CorpusReport, folder: Path, corpus: str) -> None:
    rows_by_file: dict[str, list[dict[str, Any]]] = {}
    for row in _read_jsonl(folder / "expected.jsonl"):
        rows_by_file.setdefault(row["file"], []).append(row)

    for file, rows in rows_by_file.items():
        path = folder / file
        if not path.is_file():
            continue
        parsed = _parse_file(report, path)
        expected_kind = _SISIMAI_KINDS.get(rows[0]["reason"], FeedbackKind.BOUNCE)
        _add(report, corpus, file, "kind", expected_kind.value, parsed.kind.value)
        for row in rows:
            _score_sisimai_row(report, corpus, parsed, row)


def _score_sisimai_row(
    report: CorpusReport, corpus: str, parsed: FeedbackReport, row: dict[str, Any]
) -> None:
    file, reason = row["file"], row["reason"]
    index = int(row["recipient_index"]) - 1
    ours = parsed.recipients[index] if index < len(parsed.recipients) else None

    if reason != "vacation":
        got = "found" if ours else f"{len(parsed.recipients)} recipients"
        _add(report, corpus, file, "recipient", "found", got)

    status = row["status"]
    if status and not codes.is_pseudo_code(status):
        _add(
            report,
            corpus,
            file,
            "bounce_code",
            status,
            ours.bounce_code if ours else "",
        )

    if reason == "feedback":
        got_type = ours.feedback_type if ours else parsed.feedback_type
        _add(report, corpus, file, "feedback_type", row["feedback_type"], got_type)
    if reason in _SISIMAI_KINDS:
        return

    got_type = ours.bounce_type.value if ours and ours.bounce_type else ""
    expected = BounceType.HARD if row["hard_bounce"] else BounceType.SOFT
    _add(report, corpus, file, "bounce_type", expected.value, got_type)

    own_reason = SISIMAI_REASONS.get(reason, R.OTHER)
    own = bounce_type_for(own_reason, status, row["reply_code"])
    _add(report, corpus, file, "bounce_type_own", own.value, got_type)


def _score_flufl(report: CorpusReport, folder: Path) -> None:
    expected: dict[str, dict[str, Any]] = {}
    for row in _read_jsonl(folder / "expected.jsonl"):
        previous = expected.get(row["file"])
        if previous is None or not previous["addresses"]:
            expected[row["file"]] = row

    for file, row in expected.items():
        path = folder / file
        if not path.is_file():
            continue
        parsed = _parse_file(report, path)
        got = sorted({r.address.lower() for r in parsed.recipients})
        want = sorted({address.lower() for address in row["addresses"]})
        name = "recipient" if want else "recipient_none"
        _add(report, "flufl", file, name, " ".join(want), " ".join(got))
        if want:
            want_kind = FeedbackKind.DELAY if row["temporary"] else FeedbackKind.BOUNCE
            _add(report, "flufl", file, "kind", want_kind.value, parsed.kind.value)


def _score_crisp(report: CorpusReport, folder: Path) -> None:
    expected_folder = folder / "expected"
    if not expected_folder.is_dir():
        return
    for expected_path in sorted(expected_folder.glob("*.json")):
        path = folder / (expected_path.stem + ".txt")
        if not path.is_file():
            continue
        data = json.loads(expected_path.read_text(encoding="utf-8")).get("data") or {}
        parsed = _parse_file(report, path)
        _score_crisp_file(report, path.name, data, parsed)


def _score_crisp_file(
    report: CorpusReport, file: str, data: dict[str, Any], parsed: FeedbackReport
) -> None:
    first = parsed.recipients[0] if parsed.recipients else None
    recipient = data.get("recipient")
    if recipient:
        got = {r.address.lower() for r in parsed.recipients}
        ok_value = (
            recipient.lower() if recipient.lower() in got else " ".join(sorted(got))
        )
        _add(report, "crisp", file, "recipient", recipient.lower(), ok_value)

    error = data.get("error") or {}
    enhanced = (error.get("code") or {}).get("enhanced")
    if enhanced:
        _add(
            report,
            "crisp",
            file,
            "bounce_code",
            enhanced,
            first.bounce_code if first else "",
        )
