"""Dispatch: SendAccepted (or a due retry) -> SMTP through the mailbox's own relay -> its outcome.

Outcomes are typed: sent (MessageSent), soft failure (DispatchDeferred and a durable timer for the
next attempt, until the send's lifetime runs out), hard failure (MessageFailed). The outcome, and the
timer, are recorded before the offset is committed, and an event whose outcome is recorded is never
sent again: a redelivery re-publishes the recorded outcome. The one unavoidable duplicate window is
between the relay's 250 and that record (RFC 1047); the Message-ID is the same on every attempt.

A batch waits at most `smtp_patience_s` for its sends, so a slow or silent relay holds up only its own
mailbox (see `Attempt`): the sends not done by then finish on their own under a lease, a durable
DispatchRetryDue that falls due only once the send can no longer be at the relay and makes the attempt
again should this process die first; the outcome is recorded under the lease's id.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal
from uuid import UUID

import asyncpg
import structlog
from faststream.kafka import KafkaBroker
from prometheus_client import Counter

from mail.compose import (
    UnsendableMessage,
    blob_hashes,
    envelope_recipients,
    every_recipient,
    needs_smtputf8,
    render_message,
    wire_address,
)
from schemas import topics
from schemas.envelope import Envelope
from schemas.events import (
    BlobRef,
    DispatchDeferred,
    DispatchDeferredPayload,
    DispatchRetryDue,
    DispatchRetryDuePayload,
    MessageFailed,
    MessageFailedPayload,
    MessageSent,
    MessageSentPayload,
    MessageSummary,
    SendAccepted,
    SendAcceptedPayload,
    SmtpReply,
    event_from,
)
from services.common import db, timers
from services.common.broker import bound, is_transient, publish_events, subscribe
from services.common.domain import bodies, redrive, unsubscribe
from services.common.domain.blobs import BlobCorrupt, BlobMissing, BlobStore, blob_store
from services.common.domain.receiving.intake import Intake, Target, screened, targets_from, targets_sql
from services.common.egress import Egress
from services.common.secrets import Secrets
from services.common.settings import DispatchSettings
from services.dispatch.recorder import OutcomeRecorder
from services.dispatch.retry import next_attempt_at
from services.dispatch.smtp import Outcome, Relay, SmtpPool

CONSUMER = "dispatch"
RFC822 = "message/rfc822"
INTERNAL = "2.0.0 delivered to hosted addresses without a relay"
REFUSED = "5.7.1 the recipients do not accept mail from this sender"
OUTCOMES = Counter("sendstream_dispatch_outcomes_total", "SMTP attempts by outcome", ["outcome"])
log = structlog.get_logger("sendstream.dispatch")


def relays_from(rows: list[tuple], secrets: Secrets) -> dict[UUID, Relay]:
    return {
        mailbox_id: Relay(host, port, tls, username, secrets.open(password))
        for mailbox_id, host, port, tls, username, password in rows
    }


# What a batch needs, read in one round trip: the outcomes recorded already ($1: the events), the relays
# of the mailboxes ($2) and which recipients ($3, lower-cased) are hosted here (intake.targets_sql).
BATCH = f"""
SELECT ARRAY(SELECT (event_id, coalesce(outputs, '[]')::text) FROM processed_events
              WHERE consumer = '{CONSUMER}' AND event_id = ANY($1::uuid[])) AS done,
       ARRAY(SELECT (id, smtp_host, smtp_port, smtp_tls, smtp_username, smtp_password)
               FROM mailboxes WHERE id = ANY($2::uuid[]) AND deleted_at IS NULL) AS relays,
       ARRAY(SELECT (t.address, t.identity_id, t.org_id, t.mailbox_id, t.dialect, t.by_handle, t.created_at)
               FROM ({targets_sql("$3")}) AS t) AS targets
"""
TARGET_COLUMNS = ("address", "identity_id", "org_id", "mailbox_id", "dialect", "by_handle", "created_at")


async def batch_state(
    pool: asyncpg.Pool, todo: list[Envelope], secrets: Secrets
) -> tuple[dict[UUID, list[Envelope]], dict[UUID, Relay], dict[str, list[Target]]]:
    """The outcomes of `todo` recorded already (as db.recorded_many), the relays of their mailboxes that
    still exist (a removed mailbox's sends fail) and their hosted recipients (as intake.hosted): one query."""
    addresses = list({a for e in todo for a in every_recipient(attempt_of(e)[0])})
    row = await pool.fetchrow(
        BATCH,
        [e.event_id for e in todo],
        list({attempt_of(e)[0].mailbox_id for e in todo}),
        [a.lower() for a in addresses],
    )
    done = {event_id: [event_from(o) for o in json.loads(outputs)] for event_id, outputs in row["done"]}
    targets = [dict(zip(TARGET_COLUMNS, t, strict=True)) for t in row["targets"]]
    return done, relays_from(row["relays"], secrets), targets_from(addresses, targets)


def outcome_events(
    event: Envelope,
    accepted: SendAcceptedPayload,
    attempt: int,
    first_attempt_at: datetime,
    outcome: Outcome,
    relay: str,
    now: datetime,
    settings: DispatchSettings,
    raw: BlobRef | None = None,
    delivered_to: list[UUID] | None = None,
) -> tuple[list[Envelope], DispatchRetryDue | None]:
    """The facts an attempt's outcome publishes (`raw`: the message as sent), and the retry to schedule
    if it was deferred. Pure."""
    p = accepted
    summary = MessageSummary(
        conv_id=p.conv_id, from_addr=p.from_addr, to=p.to, subject=p.content.subject,
        mailbox_email=p.mailbox_email, dialect=p.content.dialect, forwarded=p.content.forwarded is not None,
    )  # fmt: skip
    if outcome.kind == "sent":
        sent = MessageSentPayload(
            message_id=p.message_id, mailbox_id=p.mailbox_id, rfc_message_id=p.rfc_message_id, relay=relay,
            reply=outcome.reply, attempt=attempt, summary=summary, raw=raw, delivered_to=delivered_to or [],
        )  # fmt: skip
        return [MessageSent(**event.caused(occurred_at=now), payload=sent)], None
    due = next_attempt_at(attempt, first_attempt_at, now, settings.retry_delays_s, settings.retry_max_age_s)
    if outcome.kind == "hard" or due is None:
        reason = (
            outcome.reason
            if outcome.kind == "hard"
            else f"gave up after {attempt} attempts: {outcome.reason}"
        )
        failed = MessageFailedPayload(
            message_id=p.message_id,
            mailbox_id=p.mailbox_id,
            reason=reason,
            reply=outcome.reply,
            attempt=attempt,
            summary=summary,
        )
        return [MessageFailed(**event.caused(occurred_at=now), payload=failed)], None
    deferred = DispatchDeferred(
        **event.caused(occurred_at=now),
        payload=DispatchDeferredPayload(
            message_id=p.message_id, mailbox_id=p.mailbox_id, attempt=attempt, next_attempt_at=due,
            reason=outcome.reason, reply=outcome.reply,
        ),
    )  # fmt: skip
    retry = DispatchRetryDue(
        **event.caused(occurred_at=due),
        event_id=uuid.uuid5(p.message_id, f"retry:{attempt + 1}"),
        payload=DispatchRetryDuePayload(
            message_id=p.message_id, mailbox_id=p.mailbox_id, attempt=attempt + 1,
            first_attempt_at=first_attempt_at, accepted=accepted,
        ),
    )  # fmt: skip
    return [deferred], retry


def attempt_of(event: Envelope) -> tuple[SendAcceptedPayload, int, datetime | None] | None:
    """What to send and which attempt this is, for the events dispatch acts on."""
    if isinstance(event, SendAccepted):
        return event.payload, 1, None
    if isinstance(event, DispatchRetryDue):
        return event.payload.accepted, event.payload.attempt, event.payload.first_attempt_at
    return None


@dataclass
class Attempt:
    """One send of a batch, and how far it got: a batch waits at most `smtp_patience_s` for its sends;
    the ones not done by then go on by themselves under a lease (a durable DispatchRetryDue that stands
    in for the send should this process die). One still waiting for a connection must start its SMTP
    transaction by `start_by`, or it leaves the send to its lease."""

    event: Envelope
    # Shared by the batch's sends: the error that kept one of them from recording its outcome. Once
    # set, no other send of the batch starts (one handed over to a lease excepted: the batch no longer
    # answers for it): the batch is delivered again, and each send is made then.
    record_failed: list[BaseException] = field(default_factory=list)
    phase: Literal["waiting", "smtp", "recording"] = "waiting"
    lease: DispatchRetryDue | None = None  # set when handed over: the outcome is recorded under its id
    leased: asyncio.Event = field(default_factory=asyncio.Event)  # the lease is durable
    start_by: float | None = None  # time.monotonic() deadline to start, for a send handed over waiting


def lease_for(event: Envelope, due: datetime) -> DispatchRetryDue:
    """The same attempt again at `due`, under an id derived from the event it stands in for."""
    accepted, attempt, first_at = attempt_of(event)
    return DispatchRetryDue(
        **event.caused(occurred_at=due),
        event_id=uuid.uuid5(event.event_id, "lease"),
        payload=DispatchRetryDuePayload(
            message_id=accepted.message_id, mailbox_id=accepted.mailbox_id, attempt=attempt,
            first_attempt_at=first_at or event.occurred_at, accepted=accepted,
        ),
    )  # fmt: skip


@dataclass
class LetThemFinish:
    """On a clean stop, give the sends finishing on their own up to `grace_s` to record their outcomes
    (what is still running then is left to its lease)."""

    running: set[asyncio.Task]
    grace_s: float

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        if self.running:
            await asyncio.wait(set(self.running), timeout=self.grace_s)


class Dispatcher:
    """Dispatch's work on a batch of decisions: render each accepted message, hand it to its mailbox's
    relay (or to hosted recipients without one), record the relay's answer once, and hand sends still
    running after the batch's patience over to durable leases."""

    def __init__(self, broker: KafkaBroker, settings: DispatchSettings, pool: asyncpg.Pool):
        self.broker, self.settings, self.pool = broker, settings, pool
        self.smtp = SmtpPool(
            timeout=settings.smtp_timeout_s, transaction_timeout=settings.smtp_transaction_timeout_s,
            hostname=settings.smtp_hostname, size=settings.smtp_pool_size, idle_s=settings.smtp_idle_s,
            egress=Egress.of(settings),
        )  # fmt: skip
        self.recorder = OutcomeRecorder(pool, CONSUMER)
        self.secrets = Secrets(settings.secret_keys)
        self.blobs = blob_store(settings, pool)
        self.intake = Intake(settings, pool, broker, self.blobs)  # delivery to hosted addresses, as inbound mail
        size = settings.smtp_pool_size
        self.lanes: dict[UUID, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(size))
        self.unrecorded: dict[UUID, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(2 * size))
        self.on_their_own: set[asyncio.Task] = set()  # handed-over sends finishing after their batch

    async def schedule(self, conn: asyncpg.Connection, event: DispatchRetryDue) -> None:
        """A later attempt (a retry, a lease): a durable timer, and what the message waits for now, should
        its event be lost once published (services/common/domain/redrive.py)."""
        await timers.schedule(conn, event, event.occurred_at)
        after = timedelta(seconds=self.settings.redrive_after_s)
        await redrive.watch(conn, event.payload.message_id, event, event.occurred_at + after)

    async def send(
        self,
        relay: Relay,
        event: Envelope,
        accepted: SendAcceptedPayload,
        now: datetime,
        local: dict[str, list[Target]],
    ) -> tuple[Outcome, BlobRef | None, list[UUID]]:
        """Render, hand over and keep one message: its raw MIME goes to the blob store while the relay
        takes it (should the store fail, the outcome is recorded without it rather than the message
        sent twice). Recipients at hosted addresses (`local`) get it without a relay, as the inbound
        service would have (ids from the message's, so a retry delivers nothing twice); the relay gets
        the others. A message that cannot be rendered or addressed as it is, or whose attachments are
        gone, fails for good (a retry would fail the same way), and the partition moves on.

        A message with a one-click unsubscribe link is one copy per recipient, each with a link of its
        own (a link unsubscribes only the one it was sent to): one SMTP transaction per recipient, as
        bulk senders do (`deliver_each`); the copy kept is the first recipient's."""
        try:
            files = {sha256: await self.blobs.get(sha256) for sha256 in blob_hashes(accepted.content)}
            if accepted.content.offloaded:
                accepted = accepted.model_copy(
                    update={"content": await bodies.inline(self.blobs, accepted.content)}
                )
            everyone = every_recipient(accepted)
            wires = dict(zip(everyone, envelope_recipients(accepted), strict=True))
            sender = wire_address(accepted.from_addr)
            personal = bool(accepted.content.unsubscribe and unsubscribe.key_of(self.settings) is not None)

            def copy_for(address: str) -> bytes:
                """`address`'s own copy (its own unsubscribe link), made when it is sent: a copy differs
                from the others only in that link, so one that renders means they all do."""
                link = unsubscribe.headers(self.settings, accepted.message_id, accepted.mailbox_email, address)
                return render_message(accepted, now, files, link)

            data = copy_for(everyone[0]) if personal and everyone else render_message(accepted, now, files)

            def copy_of(address: str) -> bytes:  # the first recipient's copy is `data`, made once
                return data if not personal or address == everyone[0] else copy_for(address)

            recipients = [wire for a, wire in wires.items() if a.lower() not in local]
        except (UnsendableMessage, BlobMissing, BlobCorrupt) as exc:
            return Outcome("hard", None, f"the message cannot be sent: {type(exc).__name__}: {exc}"), None, []
        # Hosted recipients whose organization's sender rules refuse the sender get nothing (it is recorded).
        internal = {
            a: kept for a in everyone if a.lower() in local
            and (kept := await screened(self.pool, local[a.lower()], accepted.from_addr, a, "data"))
        }  # fmt: skip
        if internal and personal and len(internal) > 1:  # each its own copy, under ids of its own
            for a, kept in internal.items():
                origin = f"{accepted.message_id}:{a.lower()}"
                await self.intake.keep(copy_of(a), accepted.from_addr, {a: kept}, origin, event.identity_id)
        elif internal:
            only = copy_of(next(iter(internal)))
            await self.intake.keep(only, accepted.from_addr, internal, str(accepted.message_id), event.identity_id)
        delivered = list(dict.fromkeys(t.identity_id for ts in internal.values() for t in ts))
        if not recipients and not internal:  # every recipient is hosted here and refuses this sender
            reply = SmtpReply(code=550, message=REFUSED)
            return (
                Outcome("hard", reply, f"the recipients' sender rules refuse {accepted.from_addr}"),
                None,
                [],
            )
        if not recipients:
            return (
                Outcome("sent", SmtpReply(code=250, message=INTERNAL), ""),
                await self.blobs.put(data, RFC822, [event.org_id]),
                delivered,
            )
        keeping = asyncio.create_task(self.blobs.put(data, RFC822, [event.org_id]))  # beside the SMTP transaction
        try:
            address_of = {wire: a for a, wire in wires.items()}
            if personal and len(recipients) > 1:
                outcome = await self.deliver_each(relay, sender, [(w, address_of[w]) for w in recipients], copy_of)
            else:
                only = copy_of(address_of[recipients[0]])
                outcome = await self.smtp.deliver(
                    relay, sender, recipients, only, smtputf8=needs_smtputf8([sender, *recipients])
                )
        finally:
            await asyncio.wait([keeping])
        if keeping.exception() is not None:  # the outcome is recorded all the same: it must not be repeated
            log.error("the raw message could not be kept", error=repr(keeping.exception()))
            return outcome, None, delivered
        return outcome, keeping.result(), delivered

    async def deliver_each(
        self,
        relay: Relay, sender: str, recipients: list[tuple[str, str]], copy_for: Callable[[str], bytes]
    ) -> Outcome:
        """One SMTP transaction per recipient (`recipients`: each one's envelope and written address; its
        copy made by `copy_for` as its turn comes, so no more than one is held at a time), one after the
        other on the relay's pooled connection, all within the time one transaction
        may take (a send handed over to a lease counts on that). Sent if the relay took it for any
        recipient, the others named in the reason, as a relay refusing some recipients of one
        transaction is; otherwise deferred if any refusal was temporary (or a recipient was not tried in
        time), else failed."""
        outcomes: dict[str, Outcome] = {}
        try:
            async with asyncio.timeout(self.settings.smtp_transaction_timeout_s):
                for wire, address in recipients:
                    outcomes[wire] = await self.smtp.deliver(
                        relay, sender, [wire], copy_for(address), smtputf8=needs_smtputf8([sender, wire])
                    )
        except TimeoutError:
            pass
        untried = [w for w, _ in recipients if w not in outcomes]
        sent = [o for o in outcomes.values() if o.kind == "sent"]
        if sent:
            refused = sorted([w for w, o in outcomes.items() if o.kind != "sent"] + untried)
            return Outcome("sent", sent[0].reply, "accepted" + (f"; refused: {refused}" if refused else ""))
        soft = next((o for o in outcomes.values() if o.kind == "soft"), None)
        if soft or untried:
            return soft or Outcome(
                "soft", None, "the relay took no recipient within the transaction time limit"
            )
        return next(iter(outcomes.values()))

    async def dispatch_one(
        self,
        a: Attempt, relays: dict[UUID, Relay], local: dict[str, list[Target]]
    ) -> list[Envelope]:
        event = a.event
        accepted, attempt, first_at = attempt_of(event)
        mailbox = accepted.mailbox_id
        with bound(event):
            # `unrecorded` is held from the start of the SMTP transaction until its outcome is recorded:
            # at most twice smtp_pool_size messages per mailbox are ever between a relay's 250 and their
            # record, which bounds the duplicates a crash of dispatch can cause (a database that fails
            # meanwhile only delays the record: `record_outcome`). `lanes` bounds open transactions.
            async with self.unrecorded[mailbox]:
                async with self.lanes[mailbox]:
                    if a.start_by is not None and time.monotonic() > a.start_by:
                        log.warning("no connection free in time; the send's lease makes it later")
                        return []
                    if a.record_failed and a.lease is None:  # one handed over is its lease's, not the batch's
                        raise a.record_failed[0]
                    a.phase = "smtp"
                    now = datetime.now(UTC)
                    relay, raw, delivered = relays.get(mailbox), None, []
                    if relay is None:
                        outcome = Outcome("hard", None, "the mailbox was removed")
                    else:
                        outcome, raw, delivered = await self.send(relay, event, accepted, now, local)
                    a.phase = "recording"
                facts, retry = outcome_events(
                    event,
                    accepted,
                    attempt,
                    first_at or now,
                    outcome,
                    str(relay),
                    datetime.now(UTC),
                    self.settings,
                    raw,
                    delivered,
                )
                if a.lease is not None:
                    await a.leased.wait()
                outputs = await self.record_outcome(a, facts, retry)
            OUTCOMES.labels(outcome.kind).inc()
            log.info("dispatched", outcome=outcome.kind, attempt=attempt, reason=outcome.reason)
            if a.lease is not None:  # its batch is gone: publish here, then the lease has nothing left to do
                await publish_events(self.broker, self.settings, outputs)
                await timers.done(self.pool, [a.lease])
            return outputs

    async def record_outcome(self, a: Attempt, facts: list[Envelope], retry: Envelope | None) -> list[Envelope]:
        """Record what the relay answered. That record is the only account of a transaction that took
        place: dropped, the message would be sent again on redelivery. So while the database cannot
        take it (down, restarting, a connection broken under it) it is tried again, for up to
        record_patience_s; meanwhile no other send of the batch starts (they wait for its redelivery)."""
        record_as = a.lease.event_id if a.lease is not None else a.event.event_id
        give_up_at, tries = time.monotonic() + self.settings.record_patience_s, 0
        while True:
            try:
                if retry is None:  # group-committed with its neighbours' records
                    return await self.recorder.record(record_as, facts)
                async with self.pool.acquire() as conn, conn.transaction():
                    outputs, first = await db.record(conn, CONSUMER, record_as, facts)
                    if first:
                        await self.schedule(conn, retry)
                    return outputs
            except Exception as exc:
                if not a.record_failed:
                    a.record_failed.append(exc)
                tries += 1
                if not is_transient(exc) or time.monotonic() >= give_up_at:
                    raise
                pause = min(0.1 * 2**tries, 5.0)
                log.warning("the outcome could not be recorded yet; trying again",
                            attempt=tries, pause_s=pause, error=repr(exc))  # fmt: skip
                await asyncio.sleep(pause)

    def finished_on_its_own(self, task: asyncio.Task) -> None:
        self.on_their_own.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("a handed-over send did not finish; its lease completes it when due", error=repr(exc))

    async def hand_over(self, attempts: list[Attempt], tasks: list[asyncio.Task]) -> None:
        """Sends still running after the batch's patience go on by themselves. One talking to its relay
        has a lease due after the transaction's time limit (plus a margin); one still waiting for a
        connection may start within that limit, and its lease falls due after twice it. So a lease
        never falls due while its send can still be at the relay.

        If the leases cannot be stored, the sends go back to recording their outcomes as their batch's,
        and the error is raised: the batch waits for them, then is delivered again."""
        now, limit = datetime.now(UTC), self.settings.smtp_transaction_timeout_s
        for a, task in zip(attempts, tasks, strict=True):
            if a.phase == "smtp":
                a.lease = lease_for(a.event, now + timedelta(seconds=limit + 10))
            else:
                a.start_by = time.monotonic() + limit
                a.lease = lease_for(a.event, now + timedelta(seconds=2 * limit + 10))
            self.on_their_own.add(task)
            task.add_done_callback(self.finished_on_its_own)
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                for a in attempts:
                    _, first = await db.record(conn, CONSUMER, a.event.event_id, [])
                    if first:
                        await self.schedule(conn, a.lease)
        except BaseException:
            for a, task in zip(attempts, tasks, strict=True):
                a.lease, a.start_by = None, None
                a.leased.set()
                self.on_their_own.discard(task)
                task.remove_done_callback(self.finished_on_its_own)
            raise
        for a in attempts:
            a.leased.set()
        log.warning(
            "slow relays: sends handed over so the batch can go on",
            at_the_relay=sum(a.phase == "smtp" for a in attempts),
            waiting=sum(a.phase == "waiting" for a in attempts),
        )

    async def unsendable(self, event: Envelope, exc: BaseException) -> None:
        """A send dispatch fails on every time fails for good, the error as its reason, so the message
        ends visibly and the partition moves on (anything else that fails so is parked)."""
        if (attempt := attempt_of(event)) is None:
            raise exc
        accepted, number, first_at = attempt
        now = datetime.now(UTC)
        outcome = Outcome(
            "hard", None, f"dispatch could not process the message: {type(exc).__name__}: {exc}"[:500]
        )
        facts, _ = outcome_events(event, accepted, number, first_at or now, outcome, "", now, self.settings)
        await publish_events(self.broker, self.settings, await self.recorder.record(event.event_id, facts))

    async def on_decisions(self, events: list[Envelope]) -> None:
        """Send each accepted message through its mailbox's relay, once; defer and retry on 4xx."""
        # One send per event_id: a decision re-driven while its first copy still waited for dispatch
        # (the log lost, the consumer slow to join) can arrive twice in one batch.
        todo = list({e.event_id: e for e in events if attempt_of(e) is not None}.values())
        if not todo:
            return
        # What was sent already, the relays, and which recipients are hosted here (they get their mail
        # without a relay): one query a batch.
        done, relays, local = await batch_state(self.pool, todo, self.secrets)
        fresh = [e for e in todo if e.event_id not in done]
        record_failed: list[BaseException] = []
        attempts = [Attempt(e, record_failed) for e in fresh]
        tasks = [asyncio.create_task(self.dispatch_one(a, relays, local)) for a in attempts]
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.smtp_patience_s)
        # Decided at once, with no await between: a send's phase cannot move while this looks at it.
        slow = [
            (a, t) for a, t in zip(attempts, tasks, strict=True) if not t.done() and a.phase != "recording"
        ]
        if slow:
            try:
                await self.hand_over([a for a, _ in slow], [t for _, t in slow])
            except BaseException:
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        handed = {a.event.event_id for a, _ in slow}
        results = await asyncio.gather(
            *(t for a, t in zip(attempts, tasks, strict=True) if a.event.event_id not in handed),
            return_exceptions=True,
        )
        for r in results:
            if isinstance(r, BaseException):
                raise r  # every other outcome of the batch is recorded; the redelivery re-publishes them
        kept = [a.event for a in attempts if a.event.event_id not in handed]
        done.update({e.event_id: outputs for e, outputs in zip(kept, results, strict=True)})
        done.update({event_id: [] for event_id in handed})  # published by the send itself, or its lease
        if len(done) > len(fresh):
            log.info("re-publishing recorded outcomes", count=len(done) - len(fresh))
        await publish_events(self.broker, self.settings, [o for e in todo for o in done[e.event_id]])


def build(
    broker: KafkaBroker, settings: DispatchSettings, pool: asyncpg.Pool
) -> tuple[LetThemFinish, BlobStore]:
    """Register the dispatch consumer on `broker`."""
    d = Dispatcher(broker, settings, pool)
    subscribe(broker, settings, [topics.DECISIONS], group=CONSUMER, on_poison=d.unsendable)(d.on_decisions)
    return LetThemFinish(d.on_their_own, settings.smtp_timeout_s), d.blobs
