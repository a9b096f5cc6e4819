"""Per-process caches of API keys and identities, invalidated across processes with LISTEN/NOTIFY.

Every request authenticates and most look up an identity: two database round trips before anything
is published. Entries live `ttl` seconds at most. A change (key revoked, identity changed or deleted)
is evicted at once in the process that made it and announced on a PostgreSQL channel that every
ingress process listens on, so the others drop it within milliseconds. If the listening connection
is lost, everything is dropped and it reconnects.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from services.common.notify import Listener

CHANNEL = "sendstream_cache"
MAX_ENTRIES = 50_000


class Cache:
    def __init__(self, database_url: str, ttl: float = 30.0):
        self.ttl = ttl
        self.entries: dict[str, tuple[float, Any]] = {}
        # Connected or lost, what was missed meanwhile is unknown: start empty either way.
        self.listener = Listener(database_url, CHANNEL, self._heard, self.entries.clear)

    def get(self, key: str) -> Any | None:
        hit = self.entries.get(key)
        if hit is None or hit[0] < time.monotonic() or not self.listener.connected:
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

    def _heard(self, key: str) -> None:
        self.entries.pop(key, None)

    async def start(self) -> None:
        await self.listener.start()

    async def stop(self) -> None:
        await self.listener.stop()
