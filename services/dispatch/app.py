"""Dispatch: SendAccepted (or a due retry) -> SMTP through the mailbox's own relay -> its outcome.

Outcomes are typed: sent (MessageSent), soft failure (DispatchDeferred and a durable timer for the
next attempt, until the send's lifetime runs out), hard failure (MessageFailed). The outcome, and the
timer, are recorded before the offset is committed, and an event whose outcome is recorded is never
sent again: a redelivery re-publishes the recorded outcome. The one unavoidable duplicate window is
between the relay's 250 and that record (RFC 1047); the Message-ID is the same on every attempt.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from uuid import UUID

import asyncpg
import structlog
from faststream.kafka import KafkaBroker

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
    SendAccepted,
    SendAcceptedPayload,
)
from services.common import db, timers
from services.common.broker import publish_events, subscribe
from services.common.settings import DispatchSettings
from services.dispatch.mime import build_message, envelope_recipients
from services.dispatch.retry import next_attempt_at
from services.dispatch.smtp import Outcome, Relay, SmtpPool

CONSUMER = "dispatch"
log = structlog.get_logger("sendstream.dispatch")


async def load_relay(pool: asyncpg.Pool, mailbox_id: UUID) -> Relay | None:
    row = await pool.fetchrow(
        """SELECT smtp_host, smtp_port, smtp_tls, smtp_username, smtp_password
             FROM mailboxes WHERE id = $1 AND deleted_at IS NULL""",
        mailbox_id,
    )
    if row is None:
        return None
    return Relay(
        row["smtp_host"], row["smtp_port"], row["smtp_tls"], row["smtp_username"], row["smtp_password"]
    )


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
    if outcome.kind == "sent":
        sent = MessageSentPayload(
            message_id=p.message_id, mailbox_id=p.mailbox_id, rfc_message_id=p.rfc_message_id, relay=relay,
            reply=outcome.reply, attempt=attempt,
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


def build(broker: KafkaBroker, settings: DispatchSettings, pool: asyncpg.Pool) -> None:
    """Register the dispatch consumer on `broker`."""
    smtp = SmtpPool(
        timeout=settings.smtp_timeout_s, hostname=settings.smtp_hostname, size=settings.smtp_pool_size,
        idle_s=settings.smtp_idle_s,
    )  # fmt: skip

    @subscribe(broker, settings, [topics.DECISIONS], group=CONSUMER)
    async def on_decision(event: Envelope) -> None:
        """Send each accepted message through its mailbox's relay, once; defer and retry on 4xx."""
        if isinstance(event, SendAccepted):
            accepted, attempt, first_at = event.payload, 1, None
        elif isinstance(event, DispatchRetryDue):
            accepted, attempt, first_at = (
                event.payload.accepted,
                event.payload.attempt,
                event.payload.first_attempt_at,
            )
        else:
            return
        outputs = await db.recorded(pool, CONSUMER, event.event_id)
        if outputs is None:
            now = datetime.now(UTC)
            relay = await load_relay(pool, accepted.mailbox_id)
            if relay is None:
                outcome = Outcome("hard", None, "the mailbox was removed")
            else:
                data = build_message(accepted, now).as_bytes()
                outcome = await smtp.deliver(relay, accepted.from_addr, envelope_recipients(accepted), data)
            done = datetime.now(UTC)
            facts, retry = outcome_events(
                event, accepted, attempt, first_at or now, outcome, str(relay), done, settings
            )
            async with pool.acquire() as conn, conn.transaction():
                outputs, first = await db.record(conn, CONSUMER, event.event_id, facts)
                if first and retry is not None:
                    await timers.schedule(conn, retry, retry.occurred_at)
            log.info("dispatched", outcome=outcome.kind, attempt=attempt, reason=outcome.reason)
        else:
            log.info("already dispatched, re-publishing the outcome")
        await publish_events(broker, settings, outputs)
