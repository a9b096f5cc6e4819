"""LISTEN on a PostgreSQL channel, on a connection of its own that is made again whenever it is lost.

Used where one process must hear at once what another did (a cache entry to drop, deliveries that
became due). While it is not connected nothing is heard, so whoever relies on it must also cope without
(a cache stops serving; a deliverer still polls); `changed` is called on every connect and every loss,
when what was missed meanwhile must be assumed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog

log = structlog.get_logger("sendstream.notify")

# The archiver's commit names the organizations whose archive grew (projections/archive.py); the
# ingress's feed streams and long polls hear it (services/ingress/feed.py).
ARCHIVED = "sendstream_archived"


class Listener:
    def __init__(
        self,
        database_url: str,
        channel: str,
        heard: Callable[[str], None],
        changed: Callable[[], None] = lambda: None,
        retry_s: float = 1.0,
    ):
        self.database_url, self.channel, self.heard, self.changed = database_url, channel, heard, changed
        self.retry_s = retry_s
        self.conn: asyncpg.Connection | None = None
        self.task: asyncio.Task | None = None
        self.listening = asyncio.Event()  # set while connected
        self.lost = asyncio.Event()  # set once the connection is lost

    @property
    def connected(self) -> bool:
        return self.conn is not None and not self.conn.is_closed()

    async def start(self) -> None:
        self.task = asyncio.create_task(self._keep_listening(), name=f"listen-{self.channel}")

    async def stop(self) -> None:
        if (
            self.task is not None
        ):  # (not service.cancel: the broker module, which service imports, uses this one)
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.close()

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.heard(payload)

    def _lost(self, _conn: Any) -> None:
        self.conn = None
        self.listening.clear()
        self.lost.set()
        self.changed()

    async def _keep_listening(self) -> None:
        while True:
            if not self.connected:
                try:
                    conn = await asyncpg.connect(self.database_url)
                    await conn.add_listener(self.channel, self._notified)
                    conn.add_termination_listener(self._lost)
                    self.conn = conn
                    self.lost.clear()
                    self.listening.set()
                    self.changed()
                except (OSError, asyncpg.PostgresError) as exc:
                    log.warning("cannot listen; will retry", channel=self.channel, error=repr(exc))
            if self.connected:  # idle until the connection is lost (looked at twice a minute as well)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(30):  # not wait_for: before 3.12 it can swallow a cancel
                        await self.lost.wait()
                continue
            await asyncio.sleep(self.retry_s)
