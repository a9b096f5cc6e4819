"""Consumers that fetch when there is work, for a broker that holds every fetch for its full wait.

Real Kafka answers a fetch as soon as records arrive, so a consumer's long fetch wait costs nothing
and delays nothing. The embedded broker (Tansu) holds every fetch for its whole `fetch_max_wait_ms`
however soon records arrive: a short wait means polling it hundreds of times a second, idle or not (a
third of a core for the local stack), and a long one delays every event.

With `kafka_wake_on_work` (set for the embedded broker) a consumer polls neither way:
- a publisher, once the broker confirmed records on a topic, rings that topic's bell: a PostgreSQL
  NOTIFY on channel `sendstream_work` naming the topic (`Ringer`). Rings are coalesced per topic: at
  most one per `kafka_wake_spacing_ms`, and always one after the last records;
- a consumer (`Gate`, installed into aiokafka's fetcher) fetches on, with its short wait, while fetches
  bring records and for `kafka_wake_linger_ms` after the last that did (as it would without any of
  this: under load nothing changes, and the rings are few); then its next fetch waits until one of its
  topics rings, or `kafka_idle_fetch_ms` passed: a ring lost with a database connection only delays an
  event, it never strands one. A publisher that rang within the linger need not ring again (the
  spacing is shorter than the linger), since the consumer it woke is still fetching.
Nothing is decided by a ring: the log stays the only source of events, and every guarantee of the
consumers (offsets, redelivery, idempotence) is the same with or without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from typing import Any

import asyncpg
import structlog

from services.common.notify import Listener

log = structlog.get_logger("sendstream.wake")

CHANNEL = "sendstream_work"


class Ringer:
    """The publisher's side: ring each topic's bell, coalesced, on a connection of its own."""

    def __init__(self, database_url: str, spacing_s: float):
        self.database_url, self.spacing_s = database_url, spacing_s
        self.conn: asyncpg.Connection | None = None
        self.last: dict[str, float] = {}  # topic -> when it was last rung
        self.due: set[str] = set()
        self.task: asyncio.Task | None = None
        self.broken_until = 0.0  # after a failed connection, rings are dropped for a while

    def ring(self, topics: Iterable[str]) -> None:
        self.due.update(topics)
        if self.due and (self.task is None or self.task.done()):
            self.task = asyncio.get_running_loop().create_task(self._send(), name="ring")

    async def _send(self) -> None:
        while self.due:
            now = time.monotonic()
            ready = [t for t in self.due if now - self.last.get(t, -1e9) >= self.spacing_s]
            if not ready:
                await asyncio.sleep(min(self.last[t] for t in self.due) + self.spacing_s - now)
                continue
            self.due.difference_update(ready)
            for t in ready:
                self.last[t] = now
            if now < self.broken_until:
                continue  # consumers find these records by their idle fetch
            try:
                if self.conn is None or self.conn.is_closed():
                    self.conn = await asyncpg.connect(self.database_url)
                # A simple query (no parameters): one message each way, nothing to prepare or bind.
                payload = ",".join(sorted(ready)).replace("'", "''")
                await self.conn.execute(f"NOTIFY {CHANNEL}, '{payload}'")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("cannot ring consumers; they fetch on their own meanwhile", error=repr(exc))
                self.broken_until = now + 5.0
                if self.conn is not None:
                    with contextlib.suppress(Exception):
                        await self.conn.close()
                self.conn = None


RINGERS: dict[str, Ringer] = {}


def ringer(database_url: str, spacing_s: float) -> Ringer:
    """This process's ringer for a database."""
    if (r := RINGERS.get(database_url)) is None:
        r = RINGERS[database_url] = Ringer(database_url, spacing_s)
    return r


def ring_when_confirmed(r: Ringer, topic: str, ack: Any) -> None:
    """Ring `topic` once the broker confirmed `ack` (an asyncio future of the producer), or now."""
    if isinstance(ack, asyncio.Future):
        ack.add_done_callback(lambda f: f.cancelled() or f.exception() is not None or r.ring([topic]))
    else:
        r.ring([topic])


class Bells:
    """The consumer's side: one LISTEN per process, telling each gate when one of its topics rang."""

    def __init__(self, database_url: str):
        self.gates: list[Gate] = []
        self.listener = Listener(database_url, CHANNEL, self._heard, self._missed)
        self.started = False

    def add(self, gate: Gate) -> None:
        self.gates.append(gate)
        if not self.started:
            self.started = True
            asyncio.get_running_loop().create_task(self.listener.start())

    def _heard(self, payload: str) -> None:
        rung = set(payload.split(","))
        for gate in self.gates:
            if not gate.topics.isdisjoint(rung):
                gate.open()

    def _missed(self) -> None:  # (re)connected or lost: whatever rang meanwhile was not heard
        for gate in self.gates:
            gate.open()


BELLS: dict[str, Bells] = {}


class Gate:
    """Holds a consumer's next fetch until there is a reason to send it (see the module docstring)."""

    def __init__(self, topics: Iterable[str], idle_s: float, linger_s: float):
        self.topics = frozenset(topics)
        self.idle_s, self.linger_s = idle_s, linger_s
        self.rung = asyncio.Event()
        self.busy_until = time.monotonic() + linger_s  # the first fetches go at once

    def open(self) -> None:
        self.rung.set()

    async def wait(self) -> None:
        if time.monotonic() >= self.busy_until:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.idle_s):  # not wait_for: before 3.12 it can swallow a cancel
                    await self.rung.wait()
        self.rung.clear()  # a ring heard during the fetch opens the next one

    def install(self, fetcher: Any) -> None:
        """Wrap aiokafka's per-request fetch (a private method, checked at start: see broker.py)."""
        fetch = fetcher._proc_fetch_request

        async def gated(assignment: Any, node_id: int, request: Any) -> bool:
            await self.wait()
            brought = await fetch(assignment, node_id, request)
            if brought:  # while records flow, fetch on as before (no ring needed), and a while after
                self.busy_until = time.monotonic() + self.linger_s
            return brought

        fetcher._proc_fetch_request = gated


def gate_for(consumer: Any, database_url: str, topics: Iterable[str], idle_s: float, linger_s: float) -> Gate:
    """Install a gate into a started aiokafka consumer's fetcher, heard by this process's bells."""
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is None or not callable(getattr(fetcher, "_proc_fetch_request", None)):
        raise RuntimeError("aiokafka's fetcher has no _proc_fetch_request(); review services/common/wake.py")
    gate = Gate(topics, idle_s, linger_s)
    gate.install(fetcher)
    if (bells := BELLS.get(database_url)) is None:
        bells = BELLS[database_url] = Bells(database_url)
    bells.add(gate)
    return gate
