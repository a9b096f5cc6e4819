"""Dispatch: SendAccepted -> SMTP through the mailbox's own relay -> MessageSent | MessageFailed.

Accepted sends are keyed by mailbox. The outcome is recorded (processed_events) before the offset is
committed, and an event whose outcome is recorded is never sent again: a redelivery re-publishes the
recorded outcome. The one unavoidable duplicate window is between the relay's 250 and that record.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import structlog
from faststream.kafka import KafkaBroker

from schemas import topics
from schemas.envelope import Envelope
from schemas.events import MessageFailed, MessageFailedPayload, MessageSent, MessageSentPayload, SendAccepted
from services.common import db
from services.common.broker import publish_events, subscribe
from services.common.settings import DispatchSettings
from services.dispatch.mime import build_message, envelope_recipients
from services.dispatch.smtp import Relay, deliver

CONSUMER = "dispatch"
log = structlog.get_logger("sendstream.dispatch")


async def load_relay(pool: asyncpg.Pool, mailbox_id) -> Relay | None:
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


async def send_accepted(event: SendAccepted, pool: asyncpg.Pool, settings: DispatchSettings) -> Envelope:
    """Do the SMTP transaction for one accepted send and return the fact that describes its outcome."""
    p = event.payload
    now = datetime.now(UTC)
    relay = await load_relay(pool, p.mailbox_id)
    if relay is None:
        return MessageFailed(
            **event.caused(occurred_at=now),
            payload=MessageFailedPayload(
                message_id=p.message_id, mailbox_id=p.mailbox_id, reason="mailbox removed"
            ),
        )
    data = build_message(p, now).as_bytes()
    outcome = await deliver(
        relay,
        p.from_addr,
        envelope_recipients(p),
        data,
        timeout=settings.smtp_timeout_s,
        hostname=settings.smtp_hostname,
    )
    done = datetime.now(UTC)
    if outcome.kind == "sent":
        return MessageSent(
            **event.caused(occurred_at=done),
            payload=MessageSentPayload(
                message_id=p.message_id,
                mailbox_id=p.mailbox_id,
                rfc_message_id=p.rfc_message_id,
                relay=str(relay),
                reply=outcome.reply,
            ),
        )
    # Transient failures are final for now; durable retries (DispatchDeferred + timers) come next.
    return MessageFailed(
        **event.caused(occurred_at=done),
        payload=MessageFailedPayload(
            message_id=p.message_id,
            mailbox_id=p.mailbox_id,
            reason=f"{outcome.kind}: {outcome.reason}",
            reply=outcome.reply,
        ),
    )


def build(broker: KafkaBroker, settings: DispatchSettings, pool: asyncpg.Pool) -> None:
    """Register the dispatch consumer on `broker`."""

    @subscribe(broker, settings, [topics.DECISIONS], group=CONSUMER)
    async def on_decision(event: Envelope) -> None:
        """Send each accepted message through its mailbox's relay, once."""
        if not isinstance(event, SendAccepted):
            return
        outcome = await db.recorded(pool, CONSUMER, event.event_id)
        if outcome is None:
            result = await send_accepted(event, pool, settings)
            outcome = await db.record(pool, CONSUMER, event.event_id, [result])
            log.info("dispatched", outcome=result.type, relay_reply=getattr(result.payload, "reply", None))
        else:
            log.info("already dispatched, re-publishing the outcome")
        await publish_events(broker, settings, outcome)
