"""Dispatch: SendAccepted (or a due retry) -> SMTP through the mailbox's own relay -> its outcome.

Outcomes are typed: sent (MessageSent), soft failure (DispatchDeferred and a durable timer for the
next attempt, until the send's lifetime runs out), hard failure (MessageFailed). The outcome, and the
timer, are recorded before the offset is committed, and an event whose outcome is recorded is never
sent again: a redelivery re-publishes the recorded outcome. The one unavoidable duplicate window is
between the relay's 250 and that record (RFC 1047); the Message-ID is the same on every attempt.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from uuid import UUID

import asyncpg
import structlog
from faststream.kafka import KafkaBroker
from prometheus_client import Counter

from schemas import topics
from schemas.envelope import Envelope
from schemas.events import (
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
)
from services.common import db, timers
from services.common.broker import bound, publish_events, subscribe
from services.common.secrets import Secrets
from services.common.settings import DispatchSettings
from services.dispatch.mime import envelope_recipients, render_message
from services.dispatch.recorder import OutcomeRecorder
from services.dispatch.retry import next_attempt_at
from services.dispatch.smtp import Outcome, Relay, SmtpPool

CONSUMER = "dispatch"
OUTCOMES = Counter("sendstream_dispatch_outcomes_total", "SMTP attempts by outcome", ["outcome"])
log = structlog.get_logger("sendstream.dispatch")


async def load_relays(pool: asyncpg.Pool, mailbox_ids: set[UUID], secrets: Secrets) -> dict[UUID, Relay]:
    """Relay settings of the mailboxes that still exist (a removed mailbox's sends fail)."""
    rows = await pool.fetch(
        """SELECT id, smtp_host, smtp_port, smtp_tls, smtp_username, smtp_password
             FROM mailboxes WHERE id = ANY($1::uuid[]) AND deleted_at IS NULL""",
        list(mailbox_ids),
    )
    return {
        r["id"]: Relay(
            r["smtp_host"],
            r["smtp_port"],
            r["smtp_tls"],
            r["smtp_username"],
            secrets.open(r["smtp_password"]),
        )
        for r in rows
    }


def outcome_events(
    event: Envelope,
    accepted: SendAcceptedPayload,
    attempt: int,
    first_attempt_at: datetime,
    outcome: Outcome,
    relay: str,
    now: datetime,
    settings: DispatchSettings,
) -> tuple[list[Envelope], DispatchRetryDue | None]:
    """The facts an attempt's outcome publishes, and the retry to schedule if it was deferred. Pure."""
    p = accepted
    summary = MessageSummary(
        conv_id=p.conv_id, from_addr=p.from_addr, to=p.to, subject=p.content.subject,
        mailbox_email=p.mailbox_email,
    )  # fmt: skip
    if outcome.kind == "sent":
        sent = MessageSentPayload(
            message_id=p.message_id, mailbox_id=p.mailbox_id, rfc_message_id=p.rfc_message_id, relay=relay,
            reply=outcome.reply, attempt=attempt, summary=summary,
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


def build(broker: KafkaBroker, settings: DispatchSettings, pool: asyncpg.Pool) -> None:
    """Register the dispatch consumer on `broker`."""
    smtp = SmtpPool(
        timeout=settings.smtp_timeout_s, hostname=settings.smtp_hostname, size=settings.smtp_pool_size,
        idle_s=settings.smtp_idle_s,
    )  # fmt: skip
    recorder = OutcomeRecorder(pool, CONSUMER)
    secrets = Secrets(settings.secret_keys)
    lanes: dict[UUID, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(settings.smtp_pool_size))
    unrecorded: dict[UUID, asyncio.Semaphore] = defaultdict(
        lambda: asyncio.Semaphore(2 * settings.smtp_pool_size)
    )

    async def dispatch_one(event: Envelope, relays: dict[UUID, Relay]) -> list[Envelope]:
        accepted, attempt, first_at = attempt_of(event)
        mailbox = accepted.mailbox_id
        with bound(event):
            # `unrecorded` is held from the start of the SMTP transaction until its outcome is recorded:
            # at most twice smtp_pool_size messages per mailbox are ever between a relay's 250 and their
            # record, which bounds the duplicates a crash can cause. `lanes` bounds open transactions.
            async with unrecorded[mailbox]:
                async with lanes[mailbox]:
                    now = datetime.now(UTC)
                    relay = relays.get(mailbox)
                    if relay is None:
                        outcome = Outcome("hard", None, "the mailbox was removed")
                    else:
                        data = render_message(accepted, now)
                        outcome = await smtp.deliver(
                            relay, accepted.from_addr, envelope_recipients(accepted), data
                        )
                facts, retry = outcome_events(
                    event,
                    accepted,
                    attempt,
                    first_at or now,
                    outcome,
                    str(relay),
                    datetime.now(UTC),
                    settings,
                )
                if retry is None:  # group-committed with its neighbours' records
                    outputs = await recorder.record(event.event_id, facts)
                else:
                    async with pool.acquire() as conn, conn.transaction():
                        outputs, first = await db.record(conn, CONSUMER, event.event_id, facts)
                        if first:
                            await timers.schedule(conn, retry, retry.occurred_at)
            OUTCOMES.labels(outcome.kind).inc()
            log.info("dispatched", outcome=outcome.kind, attempt=attempt, reason=outcome.reason)
            return outputs

    @subscribe(broker, settings, [topics.DECISIONS], group=CONSUMER)
    async def on_decisions(events: list[Envelope]) -> None:
        """Send each accepted message through its mailbox's relay, once; defer and retry on 4xx."""
        todo = [e for e in events if attempt_of(e) is not None]
        if not todo:
            return
        done = await db.recorded_many(pool, CONSUMER, [e.event_id for e in todo])
        fresh = [e for e in todo if e.event_id not in done]
        relays = await load_relays(pool, {attempt_of(e)[0].mailbox_id for e in fresh}, secrets)
        results = await asyncio.gather(*(dispatch_one(e, relays) for e in fresh), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r  # every other outcome of the batch is recorded; the redelivery re-publishes them
        done.update({e.event_id: outputs for e, outputs in zip(fresh, results, strict=True)})
        if len(done) > len(fresh):
            log.info("re-publishing recorded outcomes", count=len(done) - len(fresh))
        await publish_events(broker, settings, [o for e in todo for o in done[e.event_id]])
