"""Projections: every message-bearing event -> the messages, conversations and audit views.

Each event's view changes and its tracking record (processed_events) commit in one transaction, so a
redelivered event changes nothing twice. The views are disposable: `python -m projections --rebuild`
empties them so that a consumer group starting from offset 0 rebuilds them from the log.
"""

from __future__ import annotations

import asyncpg
import structlog
from faststream.kafka import KafkaBroker

from projections.messages import statements
from schemas import topics
from schemas.envelope import Envelope
from services.common import db
from services.common.broker import subscribe
from services.common.settings import CommonSettings

CONSUMER = "projections"
VIEWS = ("message_events", "messages", "conversations")
log = structlog.get_logger("sendstream.projections")


async def project(pool: asyncpg.Pool, event: Envelope) -> bool:
    """Apply one event to the views; False if it had already been applied."""
    todo = statements(event)
    async with pool.acquire() as conn, conn.transaction():
        if await db.claim(conn, CONSUMER, event.event_id) is not None:
            return False
        for sql, args in todo:
            await conn.execute(sql, *args)
    return True


def build(broker: KafkaBroker, settings: CommonSettings, pool: asyncpg.Pool) -> None:
    """Register the projections consumer on `broker`."""

    @subscribe(broker, settings, [topics.REQUESTS, topics.DECISIONS, topics.MESSAGES], group=CONSUMER)
    async def on_event(event: Envelope) -> None:
        """Keep the message, conversation and audit views up to date."""
        if not await project(pool, event):
            log.debug("event already projected")
