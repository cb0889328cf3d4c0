"""The operator's commands: status, events show, dead-letters replay."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from ops_support import PORTAL_ID, install, until
from sqlalchemy import select
from typer.testing import CliRunner

from pegabridge.cli import app
from pegabridge.config import Settings, get_settings
from pegabridge.events.models import OpenEvent
from pegabridge.sandbox import SandboxEndpoint
from pegabridge.store.tables import outbox
from pegabridge.web.runtime import Runtime


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The commands read the test's database."""
    monkeypatch.setenv("PEGABRIDGE_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("PEGABRIDGE_VAR_DIR", str(settings.var_dir))
    monkeypatch.setenv("PEGABRIDGE_SECRET_KEY", settings.secret_key)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def a_dead_letter(settings: Settings) -> tuple[str, str]:
    """One delivered and one dead event (the endpoint answered 500 until too late)."""

    async def scenario() -> tuple[str, str]:
        sandbox = SandboxEndpoint("pega", "s3cret")
        await sandbox.start()
        fast = settings.model_copy(update={"retry_max_age_s": 0.3})
        runtime = await Runtime.open(fast)
        try:
            brand = await install(_Served(runtime), sandbox)
            good, bad = _open_event(), _open_event()
            sandbox.responder = lambda r: (
                (500, "nope") if bad.uuid in r.body.decode() else None
            )
            await runtime.recorder.record([good, bad])
            await until(lambda: _state(runtime, bad.uuid, "dead"))
            assert brand.installation_id
            return good.uuid, bad.uuid
        finally:
            await runtime.close()
            await sandbox.stop()

    return asyncio.run(scenario())


class _Served:
    def __init__(self, runtime: Runtime) -> None:
        self.app = type("App", (), {"state": type("State", (), {"runtime": runtime})})
        self.base_url = ""


def _open_event() -> Any:
    import uuid

    return OpenEvent(
        uuid=str(uuid.uuid4()),
        metric="opens",
        metric_timestamp=1589801661,
        portal_id=PORTAL_ID,
        brand_id=1,
        customer_id=13,
    )


async def _state(runtime: Runtime, uuid: str, wanted: str) -> bool:
    async with runtime.db.connect() as conn:
        found = await conn.scalar(select(outbox.c.state).where(outbox.c.uuid == uuid))
    return bool(found == wanted)


def test_events_show_prints_the_payload_and_each_attempt_with_its_answer(
    settings: Settings, cli_env: None
) -> None:
    _good, dead = a_dead_letter(settings)

    result = CliRunner().invoke(app, ["events", "show", dead])

    assert result.exit_code == 0, result.output
    assert f'"uuid": "{dead}"' in result.output
    assert "HTTP 500: nope" in result.output


def test_events_show_refuses_an_unknown_uuid(settings: Settings, cli_env: None) -> None:
    result = CliRunner().invoke(app, ["events", "show", "0" * 8])

    assert result.exit_code == 1


def test_status_as_json_counts_the_dead_and_the_delivered(
    settings: Settings, cli_env: None
) -> None:
    a_dead_letter(settings)

    result = CliRunner().invoke(app, ["status", "--json"])

    [figures] = json.loads(result.output)
    assert figures["counts"] == {"delivered": 1, "dead": 1}


def test_status_fits_an_80_column_terminal(settings: Settings, cli_env: None) -> None:
    a_dead_letter(settings)

    result = CliRunner().invoke(app, ["status"], env={"COLUMNS": "80"})

    assert "last failure" in result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80


def test_replay_since_makes_the_dead_letters_pending_again(
    settings: Settings, cli_env: None
) -> None:
    _good, dead = a_dead_letter(settings)

    result = CliRunner().invoke(
        app, ["dead-letters", "replay", "--since", "2000-01-01"]
    )

    assert "1 dead letters are pending again" in result.output
    assert asyncio.run(_state_in(settings, dead)) == "pending"


async def _state_in(settings: Settings, uuid: str) -> str:
    runtime = await Runtime.open(settings, deliver=False)
    try:
        async with runtime.db.connect() as conn:
            return str(
                await conn.scalar(select(outbox.c.state).where(outbox.c.uuid == uuid))
            )
    finally:
        await runtime.close()
