"""`pegabridge feedback import` of a maildir and an mbox, delivered by a running serve.

The command runs as its own process against the database of a served application
whose delivery workers send to the sandbox; real corpus messages are re-addressed to
known broadcasts the way a mail server delivering them to a maildir would (a
``Delivered-To`` header naming the VERP return path).
"""

from __future__ import annotations

import asyncio
import mailbox
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from feedback_support import (
    Sent,
    add_broadcast,
    add_customer,
    corpus_message,
    feedback_rows,
    install_brand,
    sample,
)
from pegabridge.config import Settings
from pegabridge.feedback.parse import parse_message
from pegabridge.sandbox import SandboxEndpoint
from pegabridge.web.runtime import Runtime

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PEGABRIDGE = REPO / ".venv" / "bin" / "pegabridge"
if not PEGABRIDGE.exists():
    PEGABRIDGE = Path(sys.executable).with_name("pegabridge")
PARSER_SAMPLES = REPO / "tests" / "samples" / "feedback"


async def import_files(settings: Settings, *paths: Path) -> str:
    """Run the command as its own process on the test's database; its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEGABRIDGE_")}
    env.update(
        PEGABRIDGE_VAR_DIR=str(settings.var_dir),
        PEGABRIDGE_DATABASE_URL=settings.resolved_database_url(),
        PEGABRIDGE_SECRET_KEY=settings.secret_key,
        COLUMNS="200",
        NO_COLOR="1",
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [str(PEGABRIDGE), "feedback", "import", *map(str, paths)],
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def delivered_to(raw: bytes, sent: Sent) -> bytes:
    """``raw`` as the return-path mailbox stores it: with its Delivered-To line."""
    return f"Delivered-To: {sent.return_path}\n".encode() + raw


async def sent_to(runtime: Runtime, email: str) -> Sent:
    return await add_broadcast(runtime, await add_customer(runtime, email), email)


@pytest.fixture
async def runtime(served: Any, sandbox: SandboxEndpoint) -> Runtime:
    served_runtime: Runtime = served.app.state.runtime
    await install_brand(served_runtime, sandbox)
    return served_runtime


async def test_a_maildir_import_sends_its_bounces_to_pega(
    runtime: Runtime, sandbox: SandboxEndpoint, settings: Settings, tmp_path: Path
) -> None:
    raw, expected = corpus_message("bounces/sisimai", "lhost-exim-05.eml")
    corpus_sent = await sent_to(runtime, parse_message(raw).recipients[0].address)
    sample_sent = await sent_to(runtime, "bea@inbox.example")
    folder = mailbox.Maildir(tmp_path / "Maildir", create=True)
    folder.add(delivered_to(raw, corpus_sent))
    folder.add(sample("dsn-mailbox-full.eml", sample_sent))
    folder.add((PARSER_SAMPLES / "vacation.eml").read_bytes())

    output = await import_files(settings, tmp_path / "Maildir")

    received = [r.json() for r in await sandbox.wait_for(2)]
    by_broadcast = {event["broadcast_id"]: event for event in received}
    assert by_broadcast[corpus_sent.broadcast_id]["bounce_code"] == expected["status"]
    assert by_broadcast[sample_sent.broadcast_id]["bounce_type"] == "SOFT"
    assert "3 messages" in output


async def test_an_mbox_import_sends_its_complaints_and_keeps_the_unmatched(
    runtime: Runtime, sandbox: SandboxEndpoint, settings: Settings, tmp_path: Path
) -> None:
    raw, _expected = corpus_message("complaints/sisimai", "arf-01.eml")
    sent = await sent_to(runtime, "ivy@inbox.example")
    box = mailbox.mbox(tmp_path / "feedback.mbox", create=True)
    box.add(sample("arf-abuse.eml", sent))
    box.add(raw)
    box.flush()

    await import_files(settings, tmp_path / "feedback.mbox")

    [received] = await sandbox.wait_for(1)
    outcomes = sorted(row["outcome"] for row in await feedback_rows(runtime))
    assert (received.json()["metric"], received.json()["complaints"]) == (
        "complaints",
        1,
    )
    assert outcomes == ["sent", "unmatched"]


async def test_importing_the_same_files_again_records_nothing_new(
    runtime: Runtime, sandbox: SandboxEndpoint, settings: Settings, tmp_path: Path
) -> None:
    sent = await sent_to(runtime, "ada@inbox.example")
    message = tmp_path / "bounce.eml"
    message.write_bytes(sample("dsn-user-unknown.eml", sent))

    await import_files(settings, message)
    again = await import_files(settings, message)

    await sandbox.wait_for(1)
    assert "1 recorded before" in again
    assert len(await feedback_rows(runtime)) == 1
