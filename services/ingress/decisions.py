"""How a send request waits for its decision.

The decide service records each request's decisions in PostgreSQL (on the request's row of
`processed_events`) in the transaction that claims the request, and that transaction notifies channel
`sendstream_decided` with the answers of the requests it decided (services/common/domain/decided.py). Every
ingress listens; one that is waiting for one of those requests answers from the notification, or, for
a request named without its answers, reads its recorded decisions: the very record decide republishes
from when a request is delivered to it again, so the answer is what the decisions topic carries. (That
commit does not wait for the WAL flush, so the answer does not wait on the disk; decide publishes the
decisions only once they are durable: services/decide/app.py.)

(Every ingress used to read the whole decisions topic instead: a second trip through the broker on the
request path, whose fetches the embedded broker holds for their full wait.)

Notifications missed while the listening connection is lost are made up for by reading what every
waiting request has once it is back, and once more when a wait ends; a request whose decisions are not
recorded by then is answered as queued.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from uuid import UUID

import asyncpg
import structlog

from services.common import db
from services.common.domain.decided import CHANNEL, DECIDER, Answer, heard
from services.common.notify import Listener
from services.common.settings import CommonSettings

log = structlog.get_logger("sendstream.ingress.decisions")


@dataclass
class Pending:
    answers: list[Answer] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class DecisionWaiter:
    def __init__(self, settings: CommonSettings, pool: asyncpg.Pool):
        self.pool = pool
        self.pending: dict[str, Pending] = {}
        self.listener = Listener(settings.database_url, CHANNEL, self._heard, self._missed)
        self.reads: set[asyncio.Task] = set()

    async def start(self, timeout: float = 30) -> None:
        """Listen, and return once listening: a decision made after this is heard."""
        await self.listener.start()
        await asyncio.wait_for(self.listener.listening.wait(), timeout)

    async def stop(self) -> None:
        await self.listener.stop()

    def expect(self, request_event_id: UUID) -> None:
        self.pending[str(request_event_id)] = Pending()

    def look(self, request_event_id: UUID) -> None:
        """Read the request's recorded decisions now, for a request that may be decided already."""
        self._start_read([str(request_event_id)])

    def forget(self, request_event_id: UUID) -> None:
        self.pending.pop(str(request_event_id), None)

    async def wait(self, request_event_id: UUID, timeout: float) -> list[Answer]:
        """The answers of the request's decisions, or none if they are not recorded within `timeout`."""
        key = str(request_event_id)
        pending = self.pending[key]
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pending.done.wait(), timeout)
            if not pending.done.is_set():
                with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    await self._read([key])
            return list(pending.answers)
        finally:
            self.pending.pop(key, None)

    def _heard(self, payload: str) -> None:
        try:
            notified = heard(payload)
        except ValueError as exc:  # not from a decide of this version: read what is waited for
            log.warning("unreadable decision notification; reading the decisions", error=repr(exc))
            notified = dict.fromkeys(self.pending)
        unread = []
        for key, answers in notified.items():
            if (pending := self.pending.get(key)) is None or pending.done.is_set():
                continue
            if answers is None:  # too many to notify: read them
                unread.append(key)
            else:
                self._answer(key, answers)
        if unread:
            self._start_read(unread)

    def _missed(self) -> None:
        if self.pending:
            self._start_read(list(self.pending))

    def _start_read(self, keys: list[str]) -> None:
        task = asyncio.create_task(self._read(keys))
        self.reads.add(task)
        task.add_done_callback(self._read_done)

    def _read_done(self, task: asyncio.Task) -> None:
        self.reads.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("reading decisions failed; the request waits on", error=repr(exc))

    async def _read(self, keys: list[str]) -> None:
        recorded = await db.recorded_many(self.pool, DECIDER, [UUID(k) for k in keys])
        for event_id, decisions in recorded.items():
            self._answer(str(event_id), [Answer.of(d) for d in decisions])

    def _answer(self, key: str, answers: list[Answer]) -> None:
        """The answers of a request still waited for (a request answered already keeps its answer)."""
        if (pending := self.pending.get(key)) is not None and not pending.done.is_set():
            pending.answers = answers
            pending.done.set()
