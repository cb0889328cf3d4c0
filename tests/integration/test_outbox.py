"""The recorder and the outbox on a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from sqlalchemy import select

from pegabridge.config import Settings
from pegabridge.delivery import outbox
from pegabridge.delivery.outbox import Leased
from pegabridge.delivery.recorder import Recorder, Submitted
from pegabridge.events.metrics import Activity
from pegabridge.events.models import BroadcastEvent, OpenEvent
from pegabridge.installs import service
from pegabridge.store.db import create_engine
from pegabridge.store.migrate import upgrade
from pegabridge.store.tables import outbox as outbox_table
from pegabridge.store.writer import GroupCommitter


class FakeDelivery:
    """The part of the delivery engine the recorder uses, counting reservations."""

    node = "test-node"
    lease_s = 30.0

    def __init__(self) -> None:
        self.reserved = 0
        self.offered: list[Leased] = []

    def reserve(self, _installation_id: int, count: int) -> bool:
        self.reserved += count
        return True

    def unreserve(self, _installation_id: int, count: int) -> None:
        self.reserved -= count

    def offer(self, _installation_id: int, events: Sequence[Leased]) -> None:
        self.reserved -= len(events)
        self.offered.extend(events)


@pytest.fixture
async def committer(settings: Settings) -> AsyncIterator[GroupCommitter]:
    """A started group committer on a migrated database with brand 1 installed."""
    engine = create_engine(settings)
    await upgrade(engine)
    committer = GroupCommitter(engine)
    await committer.start()

    async def setup(conn: Any) -> None:
        await service.create_portal(conn, 1746, "mokup")
        await service.create_brand(conn, 1746, 1, "Mok-Up")
        values = service.InstallSettings(
            endpoint_url="http://127.0.0.1:9/x",
            password="pw",
            activities=frozenset(Activity),
        )
        from pegabridge.installs.vault import Vault

        await service.save_installation(
            conn, Vault(b"k"), 1746, 1, values, activate=True
        )

    await committer.run(setup)
    try:
        yield committer
    finally:
        await committer.stop()
        await engine.dispose()


def open_event(**fields: Any) -> OpenEvent:
    return OpenEvent(
        uuid=str(uuid.uuid4()),
        metric="opens",
        metric_timestamp=1589801661,
        portal_id=1746,
        brand_id=1,
        **fields,
    )


async def rows(committer: GroupCommitter) -> list[Any]:
    async def query(conn: Any) -> list[Any]:
        result = await conn.execute(select(outbox_table).order_by(outbox_table.c.id))
        return list(result)

    return await committer.run(query)


async def test_metric_ids_count_on_per_portal_and_metric_and_broadcasts_stay_zero(
    committer: GroupCommitter,
) -> None:
    recorder = Recorder(committer)
    broadcast = BroadcastEvent(
        uuid=str(uuid.uuid4()),
        metric="broadcasts",
        metric_timestamp=1,
        portal_id=1746,
        brand_id=1,
    )

    await recorder.record([open_event(), broadcast])
    await recorder.record([open_event(), open_event()])

    assert [(r.metric, r.metric_id) for r in await rows(committer)] == [
        ("opens", 1),
        ("broadcasts", 0),
        ("opens", 2),
        ("opens", 3),
    ]


async def test_the_same_uuid_within_one_call_and_across_calls_is_recorded_once(
    committer: GroupCommitter,
) -> None:
    recorder = Recorder(committer)
    event = open_event()

    first = await recorder.record([event, event])
    second = await recorder.record([event])

    assert first.states + second.states == ["pending", "duplicate", "duplicate"]
    assert len(await rows(committer)) == 1


async def test_a_recording_rerun_after_a_failed_shared_commit_reserves_only_once(
    committer: GroupCommitter,
) -> None:
    delivery = FakeDelivery()
    recorder = Recorder(committer, delivery)  # type: ignore[arg-type]

    async def slow(_conn: Any) -> None:
        await asyncio.sleep(0.3)

    async def failing(_conn: Any) -> None:
        raise service.InstallError("a batch-mate fails")

    # While a slow transaction runs, the recording and then a failing operation queue
    # up, so that the next shared transaction runs both, in this order, and fails.
    running = asyncio.create_task(committer.run(slow))
    await asyncio.sleep(0.1)
    recording = asyncio.create_task(recorder.record([open_event()]))
    await asyncio.sleep(0.1)
    results = await asyncio.gather(
        recording, committer.run(failing), running, return_exceptions=True
    )

    assert [type(r).__name__ for r in results] == [
        "RecordResult",
        "InstallError",
        "NoneType",
    ]
    assert (delivery.reserved, len(delivery.offered)) == (0, 1)


async def test_an_operation_that_fails_alone_runs_once_and_is_no_writer_warning(
    committer: GroupCommitter, caplog: pytest.LogCaptureFixture
) -> None:
    runs = 0

    async def refused(_conn: Any) -> None:
        nonlocal runs
        runs += 1
        raise service.InstallError("the user typed something wrong")

    with pytest.raises(service.InstallError):
        await committer.run(refused)

    assert runs == 1
    assert "writer.batch_failed" not in [
        getattr(r, "event", "") for r in caplog.records
    ]


async def test_an_expired_lease_makes_an_event_due_again_for_another_node(
    committer: GroupCommitter,
) -> None:
    recorder = Recorder(committer)
    [installation_id] = {r.installation_id for r in await rows(committer)} or {None}
    await recorder.record([open_event()])
    [row] = await rows(committer)
    now = time.time()

    async def claim(node: str, at: float) -> list[Leased]:
        return await committer.run(
            lambda conn: outbox.claim_due(
                conn, node, at, 1.0, 10, [row.installation_id]
            )
        )

    first = await claim("a", now)
    while_leased = await claim("b", now + 0.5)
    after_expiry = await claim("b", now + 2)

    assert installation_id is None
    assert [len(first), len(while_leased), len(after_expiry)] == [1, 0, 1]


async def test_numbers_made_later_never_repeat_a_metric_id_a_sender_chose(
    committer: GroupCommitter,
) -> None:
    recorder = Recorder(committer)
    chosen = Submitted(open_event(metric_id=7), has_metric_id=True)

    await recorder.record([open_event(), chosen])
    await recorder.record([open_event()])

    # The chosen 7 moves the sequence first, so the numbers made go on from 8.
    assert [r.metric_id for r in await rows(committer)] == [8, 7, 9]


async def test_dead_letters_of_an_uninstalled_brand_stay_dead_on_replay(
    committer: GroupCommitter,
) -> None:
    await Recorder(committer).record([open_event()])

    async def kill_and_uninstall(conn: Any) -> int:
        await conn.execute(outbox_table.update().values(state="dead"))
        installation = await service.find_installation(conn, 1746, 1)
        assert installation is not None
        await service.uninstall(conn, installation.id)
        return await outbox.replay_dead(conn, time.time())

    replayed = await committer.run(kill_and_uninstall)

    assert replayed == 0
    assert [r.state for r in await rows(committer)] == ["dead"]
