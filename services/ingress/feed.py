"""The organization's event feed, read from the archive (projections/archive.py), and how a stream or a
long poll hears that it grew.

The archiver notifies channel `sendstream_archived` at its commit with the organizations whose chains
grew. Every ingress listens and wakes the waiters of those organizations, which read again. A missed
notification (the listening connection lost) wakes every waiter, and a waiter whose wait ends reads
once more anyway, so nothing waits on a notification that never comes.

An organization's events are numbered without gaps in the order they were archived, and each number
is visible only once the ones before it are (the archiver appends under a lock on the chain's head), so
`seq > after` in order loses and repeats nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import TypeVar
from uuid import UUID

import asyncpg
import structlog

from services.common.notify import ARCHIVED, Listener
from services.common.settings import CommonSettings

log = structlog.get_logger("sendstream.ingress.feed")
T = TypeVar("T")


async def head(pool: asyncpg.Pool, org_id: UUID) -> int:
    """The number of the organization's latest archived event (0: none yet)."""
    return await pool.fetchval("SELECT seq FROM archive_heads WHERE org_id = $1", org_id) or 0


async def page(
    pool: asyncpg.Pool, org_id: UUID, after: int, types: list[str] | None, limit: int
) -> list[asyncpg.Record]:
    return await pool.fetch(
        """SELECT seq, event_id, type, occurred_at, event FROM event_archive
            WHERE org_id = $1 AND seq > $2 AND ($3::text[] IS NULL OR type = ANY($3))
            ORDER BY seq LIMIT $4""",
        org_id, after, types, limit,
    )  # fmt: skip


class FeedWaiter:
    def __init__(self, settings: CommonSettings):
        self.listener = Listener(settings.database_url, ARCHIVED, self._heard, self._wake_all)
        self.waiting: dict[UUID, set[asyncio.Future]] = defaultdict(set)

    async def start(self) -> None:
        await self.listener.start()

    async def stop(self) -> None:
        await self.listener.stop()
        self._wake_all()

    async def until(self, org_id: UUID, read: Callable[[], Awaitable[T]], timeout: float) -> T:
        """`read()` until it finds something (truthy) or `timeout` passes, reading again each time the
        organization's archive grows; returns what it last found."""
        deadline = time.monotonic() + timeout
        while True:
            woken = asyncio.get_running_loop().create_future()
            self.waiting[org_id].add(woken)  # before reading: growth during the read is not missed
            try:
                found = await read()
                left = deadline - time.monotonic()
                if found or left <= 0:
                    return found
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken, left)
            finally:
                waiters = self.waiting.get(org_id)
                if waiters is not None:
                    waiters.discard(woken)
                    if not waiters:
                        del self.waiting[org_id]

    def _heard(self, payload: str) -> None:
        try:
            orgs = [UUID(o) for o in json.loads(payload)]
        except (ValueError, TypeError):  # "*" (too many to name) or unreadable: everyone reads again
            self._wake_all()
            return
        for org in orgs:
            self._wake(org)

    def _wake(self, org_id: UUID) -> None:
        for woken in self.waiting.get(org_id, ()):
            if not woken.done():
                woken.set_result(None)

    def _wake_all(self) -> None:
        for org_id in list(self.waiting):
            self._wake(org_id)
