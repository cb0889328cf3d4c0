"""Group commit: many small writes share one transaction and one disk flush.

Every write of a pegabridge process goes through one :class:`GroupCommitter`. A caller
hands in an operation (an async function of a connection) and waits until the
transaction that ran it has committed; only then may it acknowledge anything. Operations
that arrive while a transaction is running wait for the next one, so under load each
flush to disk carries hundreds of writes instead of one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)

T = TypeVar("T")
Operation = Callable[[AsyncConnection], Awaitable[T]]


@dataclass
class _Pending:
    operation: Operation[Any]
    done: asyncio.Future[Any]


class WriterClosed(RuntimeError):
    """The writer was stopped; nothing more can be committed through it."""


class GroupCommitter:
    """Runs write operations in shared transactions, in the order they arrive."""

    def __init__(self, engine: AsyncEngine, max_batch: int = 512) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.transactions = 0
        self.operations = 0

    async def start(self) -> None:
        """Start the background task that commits."""
        self._task = asyncio.create_task(self._loop(), name="group-committer")

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        self._closed = True
        if self._task is None:
            return
        await self._queue.put(None)
        await self._task
        self._task = None

    async def run(self, operation: Operation[T]) -> T:
        """Run ``operation`` in a transaction; return once it has committed."""
        if self._closed:
            raise WriterClosed("the writer is stopped")
        if self._task is None:
            return await self._run_alone(operation)

        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(operation, done))
        return await done

    async def _run_alone(self, operation: Operation[T]) -> T:
        async with self._engine.begin() as conn:
            return await operation(conn)

    async def _loop(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            # One turn of the loop first: the callers woken by the last commit (the
            # recorder, the delivery results) queue their next operation then, and
            # share this transaction instead of each paying for one of its own.
            await asyncio.sleep(0)
            batch = [first]
            stop = self._take_queued(batch)
            await self._commit(batch)
            if stop:
                return

    def _take_queued(self, batch: list[_Pending]) -> bool:
        while len(batch) < self._max_batch and not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:
                return True
            batch.append(item)
        return False

    async def _commit(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            results = await self._run_batch(batch)
        except Exception as exc:
            if len(batch) == 1:
                # Nothing to separate: the caller gets its error (often a refusal of
                # what a user typed) without running the operation a second time.
                _fail(batch[0], exc)
                return
            # One operation spoiled the shared transaction: run each on its own so that
            # only the faulty one fails.
            log.warning(
                "group commit failed; retrying one by one",
                extra={"event": "writer.batch_failed", "size": len(batch)},
                exc_info=True,
            )
            await self._commit_one_by_one(batch)
            return

        self.transactions += 1
        self.operations += len(batch)
        for pending, result in zip(batch, results, strict=True):
            if not pending.done.done():
                pending.done.set_result(result)
        log.debug(
            "group committed",
            extra={
                "event": "writer.committed",
                "size": len(batch),
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )

    async def _run_batch(self, batch: list[_Pending]) -> list[Any]:
        async with self._engine.begin() as conn:
            return [await pending.operation(conn) for pending in batch]

    async def _commit_one_by_one(self, batch: list[_Pending]) -> None:
        for pending in batch:
            try:
                result = await self._run_alone(pending.operation)
            except Exception as exc:
                _fail(pending, exc)
                continue
            self.transactions += 1
            self.operations += 1
            if not pending.done.done():
                pending.done.set_result(result)


def _fail(pending: _Pending, exc: BaseException) -> None:
    if not pending.done.done():
        pending.done.set_exception(exc)
