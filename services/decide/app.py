"""Decide: requests -> SendAccepted | SendRejected.

Requests are keyed by identity, so one partition owner decides all of an identity's sends in order:
caps and affinity need no cross-process locks. A batch's state is loaded with a few set-based
queries, decided in memory request by request (each sees the ones before it), and the state changes,
the tracking rows and the decisions themselves are written by one statement, atomically. A
redelivered request re-publishes its recorded decisions instead of deciding again.

That statement commits without waiting for the WAL flush (synchronous_commit off), and notifies the
waiting ingress at once: a send request never waits on the disk. Nothing acts on a decision before
it is durable, though: `DurablePublisher` publishes decisions, and lets their requests' offsets be
committed, only after a commit that does wait for the flush (`durability_barriers`), beside the
deciding of the next batches. Decisions a database crash lost before that are recorded again, as
they were answered, before they are published.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
import structlog
from faststream.kafka import KafkaBroker
from prometheus_client import Gauge

from schemas import topics
from schemas.envelope import Envelope
from schemas.events import (
    CancelRequested,
    MessageArrived,
    ReplyRequested,
    SendAccepted,
    SendRejected,
    SendRejectedPayload,
    SendRequested,
    Timed,
)
from schemas.warmup import Warmup, effective_daily_limit
from services.common import db, timers
from services.common.broker import is_transient, publish_events, retry_pause, subscribe
from services.common.domain import redrive, sent
from services.common.domain.decided import CHANNEL, DECIDER, notifications
from services.common.progress import Progress
from services.common.service import Background, Periodic, cancel
from services.common.settings import DecideSettings
from services.decide.affinity import IdentityState, MailboxState
from services.decide.batch import Waiting, columns, decide_in_order, state_writes
from services.decide.received import answers_of
from services.decide.replies import Thread

CONSUMER = DECIDER
log = structlog.get_logger("sendstream.decide")

UNPUBLISHED = Gauge(
    "sendstream_decide_unpublished_requests", "Decided requests whose decisions wait to be published"
)


STATES = """
SELECT ARRAY(
         SELECT (i.id, i.handle, i.daily_cap, i.timezone, i.deleted_at IS NULL, coalesce(u.sent, 0))
           FROM identities i LEFT JOIN identity_usage u
             ON u.identity_id = i.id AND u.day = ($2::timestamptz AT TIME ZONE i.timezone)::date
          WHERE i.id = ANY($1::uuid[])) AS identities,
       ARRAY(
         SELECT (m.id, m.identity_id, m.email, m.health, m.hourly_limit, m.daily_limit,
                 coalesce((SELECT sum(h.sent) FROM mailbox_minutes h
                            WHERE h.mailbox_id = m.id AND h.minute > $3), 0),
                 coalesce(d.sent, 0),
                 (SELECT max(u.last_used_at) FROM mailbox_days u WHERE u.mailbox_id = m.id),
                 m.warmup_start_per_day, m.warmup_increase_per_day, m.warmup_started_at)
           FROM mailboxes m JOIN identities i ON i.id = m.identity_id
           LEFT JOIN mailbox_days d ON d.mailbox_id = m.id
                 AND d.day = ($2::timestamptz AT TIME ZONE i.timezone)::date
          WHERE m.identity_id = ANY($1::uuid[]) AND m.deleted_at IS NULL
          ORDER BY m.created_at, m.id) AS mailboxes,
       ARRAY(
         SELECT (a.identity_id, a.recipient, a.mailbox_id)
           FROM affinity a JOIN unnest($4::uuid[], $5::text[]) AS w(identity_id, recipient)
             ON a.identity_id = w.identity_id AND a.recipient = w.recipient) AS pins,
       ARRAY(
         SELECT (s.org_id, s.address)
           FROM suppressions s JOIN unnest($6::uuid[], $7::text[]) AS w(org_id, address)
             ON s.org_id = w.org_id AND s.address = w.address
          WHERE s.active) AS suppressed
"""


async def load_states(
    conn: asyncpg.Connection | asyncpg.Pool,
    requests: list[Envelope],
    now: datetime,
    threads: dict[UUID, Thread] | None = None,
) -> dict[UUID, IdentityState]:
    """Each requesting identity's cap and usage today, its mailboxes with their usage, its recipients'
    pins, and which of its recipients are suppressed: one round trip (this is on the path every send
    request waits on)."""
    threads = threads or {}
    wanted = [
        (r.identity_id, m.counterpart.lower())
        for r in requests
        if isinstance(r, SendRequested)
        for m in r.payload.messages
    ] + [
        (r.identity_id, r.payload.message.from_addr.lower())
        for r in requests
        if isinstance(r, MessageArrived)
    ]
    mailed = {(r.org_id, a.lower()) for r in requests for a in recipients_of(r, threads)}
    row = await conn.fetchrow(
        STATES,
        list({r.identity_id for r in requests}),
        now,
        now - timedelta(hours=1),
        [w[0] for w in wanted],
        [w[1] for w in wanted],
        [m[0] for m in mailed],
        [m[1] for m in mailed],
    )
    suppressed: dict[UUID, set[str]] = {}
    for org_id, address in row["suppressed"]:
        suppressed.setdefault(org_id, set()).add(address)
    org_of = {r.identity_id: r.org_id for r in requests}
    mailboxes: dict[UUID, list[MailboxState]] = {}
    for m_id, identity_id, email, health, hourly, daily, *used, start, increase, began in row["mailboxes"]:
        # a mailbox warming up is at its limit when at its ramp's (schemas/warmup.py)
        ramp = began and Warmup(start_per_day=start, increase_per_day=increase, started_at=began)
        daily = effective_daily_limit(daily, ramp, now)
        mailboxes.setdefault(identity_id, []).append(MailboxState(m_id, email, health, hourly, daily, *used))
    pins: dict[UUID, dict[str, UUID]] = {}
    for identity_id, recipient, mailbox_id in row["pins"]:
        pins.setdefault(identity_id, {})[recipient] = mailbox_id
    return {
        i_id: IdentityState(
            identity_id=i_id,
            handle=handle,
            daily_cap=daily_cap,
            used_today=used,
            mailboxes=tuple(mailboxes.get(i_id, ())),
            affinity=pins.get(i_id, {}),
            active=active,
            timezone=timezone,
            suppressed=frozenset(suppressed.get(org_of.get(i_id), ())),
        )
        for i_id, handle, daily_cap, timezone, active, used in row["identities"]
    }


async def load_threads(conn: asyncpg.Connection, conv_ids: list[UUID]) -> dict[UUID, Thread]:
    if not conv_ids:
        return {}
    rows = await conn.fetch("SELECT * FROM threads WHERE conv_id = ANY($1::uuid[])", conv_ids)
    return {
        r["conv_id"]: Thread(
            r["conv_id"],
            r["mailbox_id"],
            r["counterpart"],
            r["subject"],
            r["last_rfc_message_id"],
            tuple(r["refs"]),
        )
        for r in rows
    }


def recipients_of(request: Envelope, threads: dict[UUID, Thread]) -> list[str]:
    """Every address a request would mail (a reply: its own recipients, or its conversation's counterpart)."""
    if isinstance(request, SendRequested):
        c = request.payload.content
        return [a for m in request.payload.messages for a in (*m.to, *c.cc, *c.bcc)]
    if isinstance(request, ReplyRequested) and (thread := threads.get(request.payload.conv_id)):
        c = request.payload.content
        return [*(request.payload.to or [thread.counterpart]), *c.cc, *c.bcc]
    return []


STATE = """
usage AS (
    INSERT INTO identity_usage (identity_id, day, sent)
    SELECT * FROM unnest($1::uuid[], $2::date[], $3::int[])
    ON CONFLICT (identity_id, day) DO UPDATE SET sent = identity_usage.sent + EXCLUDED.sent
), minutes AS (
    INSERT INTO mailbox_minutes (mailbox_id, minute, sent)
    SELECT * FROM unnest($4::uuid[], $5::timestamptz[], $6::int[])
    ON CONFLICT (mailbox_id, minute) DO UPDATE SET sent = mailbox_minutes.sent + EXCLUDED.sent
), days AS (
    INSERT INTO mailbox_days (mailbox_id, day, sent, last_used_at)
    SELECT * FROM unnest($7::uuid[], $8::date[], $9::int[], $10::timestamptz[])
    ON CONFLICT (mailbox_id, day) DO UPDATE SET sent = mailbox_days.sent + EXCLUDED.sent,
        last_used_at = greatest(mailbox_days.last_used_at, EXCLUDED.last_used_at)
), pins AS (
    INSERT INTO affinity (identity_id, recipient, mailbox_id, pinned_at)
    SELECT * FROM unnest($11::uuid[], $12::text[], $13::uuid[], $14::timestamptz[])
    ON CONFLICT (identity_id, recipient) DO UPDATE
        SET mailbox_id = EXCLUDED.mailbox_id, pinned_at = EXCLUDED.pinned_at
), threads AS (
    INSERT INTO threads (conv_id, org_id, identity_id, mailbox_id, counterpart, subject,
                         last_rfc_message_id, refs, updated_at)
    SELECT c, o, i, m, cp, s, l, ARRAY(SELECT jsonb_array_elements_text(r::jsonb)), u
      FROM unnest($15::uuid[], $16::uuid[], $17::uuid[], $18::uuid[], $19::text[], $20::text[], $21::text[],
                  $22::text[], $23::timestamptz[]) AS t(c, o, i, m, cp, s, l, r, u)
    ON CONFLICT (conv_id) DO UPDATE SET last_rfc_message_id = EXCLUDED.last_rfc_message_id,
        refs = EXCLUDED.refs, updated_at = EXCLUDED.updated_at
), scheduled AS (
    INSERT INTO scheduled_sends (message_id, org_id, identity_id, send_at, state, conv_id, to_addrs, subject,
                                 unless_replied)
    SELECT m, o, i, coalesce(a, now()), s, c, ARRAY(SELECT jsonb_array_elements_text(t::jsonb)), j, u
      FROM unnest($27::uuid[], $28::uuid[], $29::uuid[], $30::timestamptz[], $31::text[], $32::uuid[],
                  $33::text[], $34::text[], $35::text[]) AS w(m, o, i, a, s, c, t, j, u)
    ON CONFLICT (message_id) DO UPDATE SET state = EXCLUDED.state, updated_at = now(),
        send_at = CASE WHEN EXCLUDED.state = 'scheduled' THEN EXCLUDED.send_at ELSE scheduled_sends.send_at END
), timed AS (
    INSERT INTO timers (event_id, due_at, event)
    SELECT * FROM unnest($36::uuid[], $37::timestamptz[], $38::jsonb[])
    ON CONFLICT (event_id) DO NOTHING
)
"""

# Both writes notify the waiting ingress of the answers of the requests decided, at commit
# (services/common/domain/decided.py: the payloads are $26).
NOTIFY = f"""(SELECT count(pg_notify('{CHANNEL}', p)) FROM unnest($26::text[]) AS p),
       (SELECT count(pg_notify('{timers.CHANNEL}', '')) WHERE cardinality($36::uuid[]) > 0)"""

# Fallback path, inside the transaction that claimed the events: store the decisions on their rows.
WRITE_CLAIMED = f"""WITH {STATE}, stored AS (
    UPDATE processed_events p SET outputs = v.o::jsonb
      FROM unnest($24::uuid[], $25::text[]) AS v(e, o)
     WHERE p.consumer = 'decide' AND p.event_id = v.e
)
SELECT {NOTIFY}
"""

# Fast path, one autocommit statement: claim every event with its decisions and write the state they
# imply; if one of them had been decided before, sendstream_abort() rolls the whole statement back.
# Its commit does not wait for the WAL flush (see the module docstring).
WRITE_NEW = f"""WITH claimed AS (
    INSERT INTO processed_events (consumer, event_id, outputs)
    SELECT 'decide', e, o::jsonb FROM unnest($24::uuid[], $25::text[]) AS v(e, o)
    ON CONFLICT DO NOTHING RETURNING event_id
), {STATE}
SELECT CASE WHEN (SELECT count(*) FROM claimed) = cardinality($24::uuid[]) THEN true
            ELSE sendstream_abort('a request of the batch was already decided') END,
       set_config('synchronous_commit', 'off', true),
       {NOTIFY}
"""

# A commit that waits for the WAL flush (the server's own setting) and so makes every earlier commit
# durable; it returns which of the given requests ($1) have their decisions recorded. In the same
# statement, before anything acts on them: each accepted send decided now is watched until it is sent
# (services/common/domain/redrive.py: $2 its request, $3 its message, $4 the event, $5 the wait), and what
# each accepted send goes to is kept (services/common/domain/sent.py: $6 its request, $7 to $13 its record),
# for the requests recorded (a request whose decisions the database lost gets them once they are
# recorded again, `DurablePublisher._publish`).
BARRIER = """WITH mark AS (
    INSERT INTO durability_barriers (consumer, at) VALUES ('decide', now())
    ON CONFLICT (consumer) DO UPDATE SET at = EXCLUDED.at
), recorded AS (
    SELECT event_id FROM processed_events WHERE consumer = 'decide' AND event_id = ANY($1::uuid[])
), watched AS (
    INSERT INTO redrives (message_id, event, due_at)
    SELECT m, e::jsonb, now() + make_interval(secs => $5)
      FROM unnest($2::uuid[], $3::uuid[], $4::text[]) AS w(r, m, e)
     WHERE w.r IN (SELECT event_id FROM recorded)
    ON CONFLICT (message_id) DO NOTHING
), kept AS (
    INSERT INTO sent_recipients (message_id, org_id, identity_id, mailbox_id, mailbox_email, rfc_message_id,
                                 recipients)
    SELECT m, o, i, b, e, r, ARRAY(SELECT jsonb_array_elements_text(t::jsonb))
      FROM unnest($6::uuid[], $7::uuid[], $8::uuid[], $9::uuid[], $10::uuid[], $11::text[], $12::text[],
                  $13::text[]) AS w(q, m, o, i, b, e, r, t)
     WHERE w.q IN (SELECT event_id FROM recorded)
    ON CONFLICT (message_id) DO NOTHING
)
SELECT ARRAY(SELECT event_id FROM recorded)
"""


async def write(
    conn: asyncpg.Connection | asyncpg.Pool,
    decided: dict[UUID, list[Envelope]],
    timezones: dict[UUID, str],
    *,
    claimed: bool,
    requests: dict[UUID, Envelope] | None = None,
) -> None:
    """Decide's state derived from the decisions themselves (services/decide/batch.py: state_writes), and
    the decisions on their requests' tracking rows: one statement, each key written once.

    `claimed`: the rows were claimed earlier in this transaction (only the decisions are stored on them);
    otherwise the statement claims them itself and undoes everything if one was taken (SQLSTATE SS001)."""
    outputs = [(event_id, db.json_array(ds)) for event_id, ds in decided.items()]
    await conn.execute(
        WRITE_CLAIMED if claimed else WRITE_NEW,
        *(writes := state_writes(decided, timezones, requests)).columns(),
        *columns(outputs, 2),
        notifications(decided),
        *writes.scheduling_columns(),
    )


# The conversation of the identity each arrival (by its index) answers, from the threads decide keeps.
ANSWERED = """
SELECT DISTINCT ON (w.i) w.i, t.conv_id
  FROM unnest($1::int[], $2::uuid[], $3::text[]) AS w (i, identity_id, answer)
  JOIN threads t ON t.identity_id = w.identity_id AND t.refs && ARRAY[w.answer]
 ORDER BY w.i, (t.last_rfc_message_id = w.answer) DESC, t.updated_at DESC
"""


async def answered(conn: asyncpg.Connection | asyncpg.Pool, fresh: list[Envelope]) -> dict[UUID, UUID]:
    """The conversation each arrival replies to, by event id, where the threads name one."""
    wanted = [(i, e.identity_id, a) for i, e in enumerate(fresh) if isinstance(e, MessageArrived)
              for a in answers_of(e)]  # fmt: skip
    if not wanted:
        return {}
    rows = await conn.fetch(ANSWERED, *map(list, zip(*wanted, strict=True)))
    return {fresh[r["i"]].event_id: r["conv_id"] for r in rows}


async def decide_fresh(
    conn: asyncpg.Connection | asyncpg.Pool, fresh: list[Envelope], now: datetime
) -> tuple[dict[UUID, list[Envelope]], dict[UUID, str]]:
    """Decide requests not decided before, in order, each seeing the state the ones before it left."""
    found = await answered(conn, fresh)
    threads = await load_threads(
        conn,
        [e.payload.conv_id for e in fresh if isinstance(e, ReplyRequested | MessageArrived)]
        + [*found.values()],
    )
    states = await load_states(conn, fresh, now, threads)
    waiting = await load_waiting(conn, fresh, [*threads])
    decided = decide_in_order(fresh, states, threads, found, now, waiting)
    return decided, {i: s.timezone for i, s in states.items()}


WAITING = """
SELECT message_id, state, conv_id, unless_replied FROM scheduled_sends WHERE message_id = ANY($1::uuid[])
UNION
SELECT message_id, state, conv_id, unless_replied FROM scheduled_sends
 WHERE conv_id = ANY($2::uuid[]) AND state = 'scheduled' AND unless_replied IS NOT NULL
"""


async def load_waiting(
    conn: asyncpg.Connection | asyncpg.Pool, fresh: list[Envelope], conv_ids: list[UUID]
) -> Waiting:
    """The scheduled messages the batch fires or cancels, and those mail arriving in the batch's
    conversations (`conv_ids`) may stop."""
    named = [i for e in fresh if isinstance(e, Timed) and e.payload.fired for i in e.payload.message_ids]
    named += [e.payload.message_id for e in fresh if isinstance(e, CancelRequested)]
    if not named and not any(isinstance(e, MessageArrived) for e in fresh):
        return Waiting()
    waiting = Waiting()
    for r in await conn.fetch(WAITING, named, conv_ids):
        waiting.states[r["message_id"]] = r["state"]
        if r["unless_replied"] and r["state"] == "scheduled":
            waiting.stop_on_reply.setdefault(r["conv_id"], {})[r["message_id"]] = r["unless_replied"]
    return waiting


def rejections(request: Envelope, detail: str) -> list[Envelope]:
    """Every message of a request rejected as `unprocessable`."""
    p = request.payload
    wanted = (
        [(m.message_id, m.conv_id, m.to) for m in p.messages]
        if isinstance(request, SendRequested)
        else [(p.message_id, p.conv_id, [])]
    )
    return [
        SendRejected(
            **request.caused(),
            payload=SendRejectedPayload(
                message_id=message_id,
                conv_id=conv_id,
                to=to,
                reason="unprocessable",
                detail=detail,
                daily_cap=0,
                remaining=0,
            ),
        )
        for message_id, conv_id, to in wanted
    ]


@dataclass
class Decided:
    """A batch's decisions by request, in the requests' order, with the time zones their state is kept in;
    `fresh`: the requests decided now (the others' decisions were recorded before and are published again)."""

    outputs: dict[UUID, list[Envelope]]
    timezones: dict[UUID, str]
    fresh: frozenset[UUID] = frozenset()
    requests: dict[UUID, Envelope] = field(default_factory=dict)  # the batch's requests (a scheduled send's timer)

    @property
    def decisions(self) -> list[Envelope]:
        return [d for ds in self.outputs.values() for d in ds]


async def decide_batch(pool: asyncpg.Pool, events: list[Envelope], now: datetime) -> Decided:
    """The decisions for every request of the batch, in order, recorded with the state they change.

    Usually every request is new: the batch is then decided and written in one statement. If any was
    decided before (a redelivery), that statement undoes itself and the batch goes the careful way:
    claim in a transaction, re-use what was recorded, decide the rest.
    """
    requests = {e.event_id: e for e in events}
    unique = list(requests.values())
    decided, timezones = await decide_fresh(pool, unique, now)
    try:
        await write(pool, decided, timezones, claimed=False, requests=requests)
        return Decided(decided, timezones, frozenset(decided), requests)
    except asyncpg.PostgresError as exc:
        if exc.sqlstate != "SS001":  # raised by sendstream_abort(): some request had been decided
            raise
    async with pool.acquire() as conn, conn.transaction():
        fresh_ids = await db.claim_many(conn, CONSUMER, [e.event_id for e in unique])
        outputs = await db.recorded_many(
            conn, CONSUMER, [e.event_id for e in unique if e.event_id not in fresh_ids]
        )
        log.info("requests already decided, re-publishing their decisions", count=len(outputs))
        fresh = [e for e in unique if e.event_id in fresh_ids]
        if fresh:
            decided, timezones = await decide_fresh(conn, fresh, now)
            await write(conn, decided, timezones, claimed=True, requests=requests)
            outputs.update(decided)
    outputs = {e.event_id: outputs.get(e.event_id, []) for e in unique}
    return Decided(outputs, timezones, frozenset(fresh_ids), requests)


async def record_again(pool: asyncpg.Pool, batch: Decided, lost: list[UUID]) -> None:
    """Record the decisions of `lost` requests once more, as they were made (and answered), with the
    state they imply; a request recorded meanwhile (decided by another owner after a rebalance)
    keeps that record, and it is what gets published."""
    async with pool.acquire() as conn, conn.transaction():
        fresh = await db.claim_many(conn, CONSUMER, lost)
        chosen = {i: batch.outputs[i] for i in lost if i in fresh}
        await write(conn, chosen, batch.timezones, claimed=True, requests=batch.requests)
        batch.outputs.update(await db.recorded_many(conn, CONSUMER, [i for i in lost if i not in fresh]))


class DurablePublisher:
    """Publishes decide's decisions once they are durable, in the order they were decided.

    Each decided batch is queued. One task, at most every `decide_publish_interval_ms`, takes
    everything queued, makes it durable with one flushing commit (`BARRIER`), records again whatever
    a database crash lost, publishes, and completes the batches, whose offsets may then be committed.
    Trouble is retried, forever, with growing pauses: the batches wait (and their offsets with them);
    a restart delivers them again. At most `limit` requests wait, so a stuck publisher stops
    deciding rather than piles up."""

    def __init__(self, broker: KafkaBroker, settings: DecideSettings, pool: asyncpg.Pool, limit: int = 2000):
        self.broker, self.settings, self.pool, self.limit = broker, settings, pool, limit
        self.queue: deque[tuple[Decided, asyncio.Future]] = deque()
        self.queued = 0
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.progress = Progress("decide publisher")

    async def submit(self, batch: Decided) -> asyncio.Future:
        """Queue a batch; returns the future it is published by."""
        while self.queued >= self.limit and self.queue:
            await asyncio.shield(self.queue[0][1])
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name="decide publisher")
        future = asyncio.get_running_loop().create_future()
        self.queue.append((batch, future))
        self.queued += len(batch.outputs)
        UNPUBLISHED.set(self.queued)
        self.wake.set()
        return future

    async def start(self) -> None:
        pass  # started by the first batch

    async def stop(self) -> None:
        """After the consumer's last commit: what is still queued is delivered again after a restart."""
        await cancel(self.task)

    async def _run(self) -> None:
        attempt, interval, last = 0, self.settings.decide_publish_interval_ms / 1000, 0.0
        while True:
            if not self.queue:
                self.wake.clear()
                await self.wake.wait()
                continue
            if (pause := last + interval - time.monotonic()) > 0:
                await asyncio.sleep(pause)
            last = time.monotonic()
            group = list(self.queue)
            try:
                await self._publish([batch for batch, _ in group])
            except Exception as exc:
                attempt += 1
                self.progress.failed(exc)
                pause = retry_pause(self.settings, attempt)
                level = log.warning if is_transient(exc) else log.error
                level(
                    "decisions not yet published; trying again",
                    attempt=attempt,
                    pause_s=pause,
                    error=repr(exc),
                )
                await asyncio.sleep(pause)
                continue
            attempt = 0
            self.progress.moved()
            for batch, future in group:
                self.queue.popleft()
                self.queued -= len(batch.outputs)
                if not future.done():
                    future.set_result(None)
            UNPUBLISHED.set(self.queued)

    async def _publish(self, batches: list[Decided]) -> None:
        # The watches and the sent records of the accepted sends go with the flushing commit (BARRIER).
        watched = [
            (i, d)
            for b in batches
            for i in b.fresh
            for d in b.outputs.get(i, ())
            if isinstance(d, SendAccepted)
        ]
        kept = [
            (i, d) for b in batches for i, ds in b.outputs.items() for d in ds if isinstance(d, SendAccepted)
        ]
        recorded = set(
            await self.pool.fetchval(
                BARRIER,
                [i for b in batches for i in b.outputs],
                [i for i, _ in watched],
                [d.payload.message_id for _, d in watched],
                [d.model_dump_json() for _, d in watched],
                self.settings.redrive_after_s,
                [i for i, _ in kept],
                *sent.columns([d for _, d in kept]),
            )
        )
        for batch in batches:
            if lost := [i for i in batch.outputs if i not in recorded]:
                log.warning("decisions lost by the database before they were durable; recording them again",
                            requests=len(lost))  # fmt: skip
                await record_again(self.pool, batch, lost)
                # Watched and kept now, as the barrier does for the others, before anything acts on them.
                accepted = [d for i in lost if i in batch.fresh for d in batch.outputs.get(i, ())
                            if isinstance(d, SendAccepted)]  # fmt: skip
                await redrive.watch_many(self.pool, accepted, self.settings.redrive_after_s)
                await sent.record(self.pool, [d for i in lost for d in batch.outputs.get(i, ())])
        await publish_events(self.broker, self.settings, [d for b in batches for d in b.decisions])


def build(broker: KafkaBroker, settings: DecideSettings, pool: asyncpg.Pool) -> list[Background]:
    """Register the decide consumer on `broker`; what it returns runs beside it: the publisher of its
    decisions, and the sweep of old minute buckets."""
    publisher = DurablePublisher(broker, settings, pool)

    async def unprocessable(event: Envelope, exc: BaseException) -> asyncio.Future:
        """A request decide fails on every time is rejected, the error as its detail: the waiting client
        and the log hear of it, its messages end, and its partition moves on. Mail that arrived has no
        one to answer: it is parked on the dead-letter topic, to be looked at and replayed."""
        if isinstance(event, MessageArrived):
            raise exc
        batch = Decided({event.event_id: rejections(event, f"{type(exc).__name__}: {exc}"[:500])}, {})
        try:
            await write(pool, batch.outputs, {}, claimed=False)
        except asyncpg.PostgresError as error:
            if error.sqlstate != "SS001":  # not "decided meanwhile": no outcome can be recorded
                raise
            batch = Decided(await db.recorded_many(pool, CONSUMER, [event.event_id]), {})
        return await publisher.submit(batch)

    @subscribe(broker, settings, [topics.REQUESTS], group=CONSUMER, path="sync", on_poison=unprocessable)
    async def on_requests(events: list[Envelope]) -> asyncio.Future:
        """Decide every recipient of each send or reply request: accept with a mailbox, or reject with a reason."""
        batch = await decide_batch(pool, events, datetime.now(UTC))
        log.debug("requests decided", requests=len(events), decisions=len(batch.decisions))
        return await publisher.submit(batch)

    async def sweep_minutes() -> None:  # minute buckets older than the rolling hour are no longer read
        await pool.execute("DELETE FROM mailbox_minutes WHERE minute < now() - interval '2 hours'")
        await sent.sweep(pool)  # and the recipients of old sends: the views have them

    return [publisher, Periodic("minute-bucket sweep", 60, sweep_minutes)]
