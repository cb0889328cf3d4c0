"""Importing returned mail from files: ``.eml`` files, maildir folders, mbox files.

``pegabridge feedback import PATH...`` reads every message under the paths, hands each
to the :class:`~pegabridge.feedback.intake.FeedbackIntake` (the same path as the SMTP
receiver: parse, match, record), shows a progress bar and ends with a summary per kind
and outcome. Importing the same messages again records nothing new.

What a path is:

* a folder with ``cur/`` and ``new/``: a maildir (its messages, not ``tmp/``);
* any other folder: every file under it, in name order (hidden files skipped);
* a file that starts with ``From `` (the mbox separator line): an mbox;
* any other file: one message.
"""

from __future__ import annotations

import asyncio
import logging
import mailbox
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from pegabridge.feedback.intake import FeedbackIntake, IntakeRuntime
from pegabridge.feedback.recording import Outcome

logger = logging.getLogger(__name__)

MBOX_SEPARATOR = b"From "
IMPORT_CONCURRENCY = 16
"""Messages recorded at the same time by an import."""


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message in a file, folder or mailbox; ``load`` reads its bytes."""

    label: str
    load: Callable[[], bytes]


@dataclass
class ImportSummary:
    """What an import did: messages per (kind, outcome), and what could not be read.

    ``seen_before`` counts messages recorded by an earlier import or delivery; they
    keep their earlier outcome and record nothing new.
    """

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    seen_before: int = 0
    unreadable: list[str] = field(default_factory=list)

    @property
    def messages(self) -> int:
        """Messages read and recorded (or found recorded already)."""
        return sum(self.counts.values())

    def outcome(self, outcome: Outcome) -> int:
        """Messages with ``outcome``, whatever their kind."""
        return sum(n for (_kind, o), n in self.counts.items() if o == outcome.value)


def find_messages(paths: Sequence[Path]) -> list[StoredMessage]:
    """Every message under ``paths``, in a stable order."""
    found: list[StoredMessage] = []
    for path in paths:
        found.extend(_messages_at(path))
    return found


def _messages_at(path: Path) -> Iterator[StoredMessage]:
    if path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir():
        yield from _maildir(path)
    elif path.is_dir():
        for child in sorted(path.rglob("*")):
            hidden = any(part.startswith(".") for part in child.relative_to(path).parts)
            if child.is_file() and not hidden:
                yield from _file(child)
    else:
        yield from _file(path)


def _file(path: Path) -> Iterator[StoredMessage]:
    try:
        with path.open("rb") as handle:
            head = handle.read(len(MBOX_SEPARATOR))
    except OSError:
        yield StoredMessage(str(path), path.read_bytes)
        return
    if head == MBOX_SEPARATOR:
        yield from _mbox(path)
    else:
        yield StoredMessage(str(path), path.read_bytes)


def _mbox(path: Path) -> Iterator[StoredMessage]:
    box = mailbox.mbox(path, create=False)
    for index, key in enumerate(box.iterkeys()):
        yield StoredMessage(f"{path}#{index + 1}", _loader(box, key))


def _maildir(path: Path) -> Iterator[StoredMessage]:
    box = mailbox.Maildir(path, factory=None, create=False)
    for key in sorted(box.iterkeys()):
        yield StoredMessage(f"{path}/{key}", _loader(box, key))


def _loader(box: mailbox.Mailbox[mailbox.Message], key: str) -> Callable[[], bytes]:
    return lambda: box.get_bytes(key)


async def import_messages(
    intake: FeedbackIntake,
    messages: Sequence[StoredMessage],
    advance: Callable[[], None] | None = None,
    source: str = "import",
    concurrency: int = IMPORT_CONCURRENCY,
) -> ImportSummary:
    """Record ``messages``, a few at a time; a message that cannot be read is listed.

    Messages in flight together share the writer's transactions (group commit), which
    is what makes a large import fast; each one is still committed before it counts.
    """
    summary = ImportSummary()
    queue = iter(messages)

    async def worker() -> None:
        for message in queue:
            await _import_one(intake, message, summary, source)
            if advance is not None:
                advance()

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    return summary


async def _import_one(
    intake: FeedbackIntake, message: StoredMessage, summary: ImportSummary, source: str
) -> None:
    try:
        raw = message.load()
    except (OSError, KeyError) as exc:
        summary.unreadable.append(f"{message.label}: {exc}")
        return

    recorded = await intake.accept(raw, source=source)
    summary.counts[(recorded.kind.value, recorded.outcome.value)] += 1
    summary.seen_before += recorded.seen_before


async def run_import(
    runtime: IntakeRuntime, paths: Sequence[Path], console: Console
) -> ImportSummary:
    """Import with a progress bar on ``console``; finishes half-recorded ones first."""
    intake = FeedbackIntake(runtime)
    await intake.resume()
    messages = find_messages(paths)

    with Progress(
        TextColumn("importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("importing", total=len(messages))
        summary = await import_messages(
            intake, messages, lambda: progress.advance(task)
        )

    logger.info(
        "feedback import done",
        extra={
            "event": "feedback.import_done",
            "messages": summary.messages,
            "unreadable": len(summary.unreadable),
        },
    )
    return summary


def summary_table(summary: ImportSummary) -> Table:
    """Messages per kind (rows) and outcome (columns, those that occur), with totals."""
    table = Table(title=f"{summary.messages} messages")
    outcomes = [o for o in Outcome if summary.outcome(o)]
    table.add_column("kind")
    for outcome in outcomes:
        table.add_column(outcome.value, justify="right")
    table.add_column("total", justify="right")

    kinds = sorted({kind for kind, _outcome in summary.counts})
    for kind in kinds:
        cells = [summary.counts[(kind, o.value)] for o in outcomes]
        table.add_row(kind, *[str(n) if n else "" for n in cells], str(sum(cells)))
    totals = [summary.outcome(o) for o in outcomes]
    table.add_row("all", *[str(n) for n in totals], str(summary.messages))
    return table
