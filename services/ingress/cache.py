"""Per-process caches of API keys and identities, invalidated across processes with LISTEN/NOTIFY.

Every request authenticates and most look up an identity: two database round trips before anything
is published. Entries live `ttl` seconds at most. A change (key revoked, identity changed or deleted)
is evicted at once in the process that made it and announced on a PostgreSQL channel that every
ingress process listens on, so the others drop it within milliseconds. If the listening connection
is lost, everything is dropped and it reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import asyncpg
import structlog

log = structlog.get_logger("sendstream.ingress.cache")

CHANNEL = "sendstream_cache"
MAX_ENTRIES = 50_000


class Cache:
    def __init__(self, database_url: str, ttl: float = 30.0):
        self.database_url, self.ttl = database_url, ttl
        self.entries: dict[str, tuple[float, Any]] = {}
        self.listener: asyncpg.Connection | None = None
        self.task: asyncio.Task | None = None

    def get(self, key: str) -> Any | None:
        hit = self.entries.get(key)
        if hit is None or hit[0] < time.monotonic() or self.listener is None:
            return None
        return hit[1]

    def put(self, key: str, value: Any) -> None:
        if len(self.entries) >= MAX_ENTRIES:
            self.entries.clear()
        self.entries[key] = (time.monotonic() + self.ttl, value)

    async def invalidate(self, pool: asyncpg.Pool | asyncpg.Connection, key: str) -> None:
        """Forget `key` here now, and in every other ingress process as soon as they hear it."""
        self.entries.pop(key, None)
        await pool.execute("SELECT pg_notify($1, $2)", CHANNEL, key)

    def _heard(self, _conn: Any, _pid: int, _channel: str, key: str) -> None:
        self.entries.pop(key, None)

    def _lost(self, _conn: Any) -> None:
        self.listener = None
        self.entries.clear()

    async def start(self) -> None:
        self.task = asyncio.create_task(self._listen(), name="cache-listener")

    async def _listen(self) -> None:
        while True:
            if self.listener is None or self.listener.is_closed():
                try:
                    conn = await asyncpg.connect(self.database_url)
                    await conn.add_listener(CHANNEL, self._heard)
                    conn.add_termination_listener(self._lost)
                    self.entries.clear()
                    self.listener = conn
                except (OSError, asyncpg.PostgresError) as exc:
                    log.warning("cache listener cannot connect; caching is off until it can", error=repr(exc))
            await asyncio.sleep(1)

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.listener is not None:
            with contextlib.suppress(Exception):
                await self.listener.close()
