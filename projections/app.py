"""Projections: every message-bearing event -> the messages, conversations and suppressions views;
and, as its own consumer group in the same process, every event -> the archive (projections/archive.py).

Each event's view changes and its tracking record (processed_events) commit in one transaction, so a
redelivered event changes nothing twice. The views are disposable: emptying them and this consumer's
tracking rows, then reading the log again from offset 0, rebuilds them. Events are applied a batch per
transaction.
"""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import structlog
from faststream.kafka import KafkaBroker

from projections import archive
from projections.messages import CONSUMER, SHAPES, plan, set_based
from schemas import topics
from schemas.envelope import Envelope
from schemas.events import MessageFailed, MessageSent, SendCancelled, SendRejected, SendScheduled
from services.common import db
from services.common.broker import subscribe
from services.common.domain import bodies
from services.common.domain.blobs import BlobStore, blob_store
from services.common.service import Background, Periodic
from services.common.settings import ProjectionsSettings

VIEWS = ("messages", "conversations", "suppressions")
# What ends a message's need of a re-drive: its outcome, or (a scheduled send) its timer taking over, or
# its cancel. A firing is watched from when the scheduler publishes it (services/scheduler/app.py).
ENDS = (MessageSent, MessageFailed, SendRejected, SendScheduled, SendCancelled)
log = structlog.get_logger("sendstream.projections")


# The batch's events claimed, and the re-drives of the messages the new ones end removed (nothing is on
# its way for them any more): one statement. Returns the events that were new.
CLAIM = f"""
WITH claimed AS (
    INSERT INTO processed_events (consumer, event_id) SELECT '{CONSUMER}', unnest($1::uuid[])
    ON CONFLICT DO NOTHING RETURNING event_id
), settled AS (
    DELETE FROM redrives WHERE message_id IN (
        SELECT m FROM unnest($2::uuid[], $3::uuid[]) AS e(event_id, m)
         WHERE e.event_id IN (SELECT event_id FROM claimed))
)
SELECT event_id FROM claimed
"""


async def claim(conn: asyncpg.Connection, events: list[Envelope]) -> list[Envelope]:
    """Inside a transaction: claim `events` and settle the re-drives of the messages the new ones end;
    returns those new to the views, each once, in their order."""
    ended = [(e.event_id, e.payload.message_id) for e in events
             if isinstance(e, ENDS)]  # fmt: skip
    rows = await conn.fetch(
        CLAIM,
        list(dict.fromkeys(e.event_id for e in events)),
        [e for e, _ in ended],
        [m for _, m in ended],
    )
    return db.each_once(events, {r["event_id"] for r in rows})


FAST = """WITH claimed AS (
    INSERT INTO processed_events (consumer, event_id) SELECT '{consumer}', unnest($1::uuid[])
    ON CONFLICT DO NOTHING RETURNING event_id
), settled AS (
    DELETE FROM redrives WHERE message_id = ANY($2::uuid[])
), {upserts}
SELECT CASE WHEN (SELECT count(*) FROM claimed) = cardinality($1::uuid[]) THEN true
            ELSE sendstream_abort('an event of the batch was projected before') END
"""

_TYPES: dict[str, dict[str, str]] = {}


async def column_types(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, dict[str, str]]:
    """The views' column types (read once a process), for the set-based upserts."""
    if not _TYPES:
        for r in await conn.fetch(
            """SELECT c.relname, a.attname, format_type(a.atttypid, NULL) AS type
                 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                WHERE c.relname IN ('messages', 'conversations') AND c.relkind = 'r'
                  AND pg_table_is_visible(c.oid) AND a.attnum > 0 AND NOT a.attisdropped"""
        ):
            _TYPES.setdefault(r["relname"], {})[r["attname"]] = r["type"]
    return _TYPES


async def project(pool: asyncpg.Pool, events: list[Envelope], blobs: BlobStore | None = None) -> int:
    """Apply events to the views atomically; returns how many were new (the rest were seen).

    Usually every event is new and each row's changes fold into one upsert (projections/messages.py,
    `plan`): then the claim of every event, the re-drives they settle and the upserts, each statement
    shape inserting all its rows from unnest(), are one autocommit statement, which undoes itself if
    an event had been projected before. Otherwise (a redelivery, a row changed twice in ways that do not
    fold, flags, deletes, suppressions) the careful way: one transaction, all events claimed in one
    statement (which also settles the re-drives of the messages they end), then the statements grouped
    by shape with executemany (pipelined), in rounds that keep a row's statements in the events' order.
    """
    texts = await bodies.texts_of(blobs, events) if blobs is not None else {}  # bodies in the blob store
    unique = list({e.event_id: e for e in events}.values())  # each once, in the order first read
    rounds = plan(unique, texts)
    if len(rounds) == 1 and all(sql in SHAPES for sql in rounds[0]):
        ctes, args = set_based(rounds[0], await column_types(pool), 3)
        ended = [
            e.payload.message_id for e in unique if isinstance(e, ENDS)
        ]
        sql = FAST.format(consumer=CONSUMER, upserts=", ".join(f"u{i} AS ({c})" for i, c in enumerate(ctes)))
        try:
            await pool.execute(sql, [e.event_id for e in unique], ended, *args)
            return len(unique)
        except asyncpg.PostgresError as exc:
            if exc.sqlstate != "SS001":  # raised by sendstream_abort(): some event had been projected
                raise
    async with pool.acquire() as conn, conn.transaction():
        new = await claim(conn, events)
        for groups in plan(new, texts):
            for sql, rows in groups.items():
                await conn.executemany(sql, rows)
    return len(new)


def build(broker: KafkaBroker, settings: ProjectionsSettings, pool: asyncpg.Pool) -> list[Background]:
    """Register the projections consumer, and the archive's, on `broker`; returns what runs beside them:
    the blob store, and the archive's retention when one is set."""
    blobs = blob_store(settings, pool)
    archive.build(broker, settings, pool)
    beside: list[Background] = [blobs]
    if (days := settings.archive_retention_days) is not None:

        async def retention() -> None:
            if dropped := await archive.drop_expired(pool, timedelta(days=days)):
                log.info("archive months past retention dropped", partitions=dropped)

        beside.append(Periodic("archive retention", 3600, retention))

    @subscribe(
        broker,
        settings,
        [topics.REQUESTS, topics.DECISIONS, topics.MESSAGES, topics.SUPPRESSIONS, topics.ADMIN],
        group=CONSUMER,
    )
    async def on_events(events: list[Envelope]) -> None:
        """Keep the message, conversation and suppression views up to date."""
        applied = await project(pool, events, blobs)
        log.debug("events projected", applied=applied, seen=len(events) - applied)

    return beside
