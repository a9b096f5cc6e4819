"""Projections: every message-bearing event -> the messages, conversations and suppressions views;
and, as its own consumer group in the same process, every event -> the archive (projections/archive.py).

Each event's view changes and its tracking record (processed_events) commit in one transaction, so a
redelivered event changes nothing twice. The views are disposable: emptying them and this consumer's
tracking rows, then reading the log again from offset 0, rebuilds them. Events are applied a batch per
transaction.
"""

from __future__ import annotations

import asyncpg
import structlog
from faststream.kafka import KafkaBroker

from projections import archive
from projections.messages import CONSUMER, plan
from schemas import topics
from schemas.envelope import Envelope
from schemas.events import MessageFailed, MessageSent, SendRejected
from services.common import bodies, db, redrive
from services.common.blobs import BlobStore, blob_store
from services.common.broker import subscribe
from services.common.settings import CommonSettings

VIEWS = ("messages", "conversations", "suppressions")
log = structlog.get_logger("sendstream.projections")


async def project(pool: asyncpg.Pool, events: list[Envelope], blobs: BlobStore | None = None) -> int:
    """Apply events to the views in one transaction; returns how many were new (the rest were seen).

    All events are claimed in one statement; each row's upserts fold into one where that is exact,
    and the statements run grouped by shape with executemany (pipelined), in rounds that keep a row's
    statements in the events' order (see projections/messages.py, `plan`).
    """
    texts = await bodies.texts_of(blobs, events) if blobs is not None else {}  # bodies in the blob store
    async with pool.acquire() as conn, conn.transaction():
        new = await db.claim_new(conn, CONSUMER, events)
        for groups in plan(new, texts):
            for sql, rows in groups.items():
                await conn.executemany(sql, rows)
        if ended := [
            e.payload.message_id for e in new if isinstance(e, MessageSent | MessageFailed | SendRejected)
        ]:
            await conn.execute(redrive.SETTLE, ended)  # nothing is on its way for them any more
    return len(new)


def build(broker: KafkaBroker, settings: CommonSettings, pool: asyncpg.Pool) -> BlobStore:
    """Register the projections consumer, and the archive's, on `broker`."""
    blobs = blob_store(settings, pool)
    archive.build(broker, settings, pool)

    @subscribe(
        broker,
        settings,
        [topics.REQUESTS, topics.DECISIONS, topics.MESSAGES, topics.SUPPRESSIONS],
        group=CONSUMER,
    )
    async def on_events(events: list[Envelope]) -> None:
        """Keep the message, conversation and suppression views up to date."""
        applied = await project(pool, events, blobs)
        log.debug("events projected", applied=applied, seen=len(events) - applied)

    return blobs
