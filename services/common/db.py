"""PostgreSQL: the pool, migrations, and the record that makes each consumer idempotent on `event_id`.

`processed_events` is every consumer's tracking record. A consumer writes its state changes and the
rows for the events it handled in one transaction (`claim_many`), together with the events it
decided to publish; a side effect outside a transaction records its outcome (`record`).
A redelivered event finds the row and re-publishes those same events (same `event_id`s, which
downstream consumers drop) instead of deciding again, so a crash between commit and publish loses
nothing and doubles nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from importlib import resources
from uuid import UUID

import asyncpg
import structlog
from pydantic_core import PydanticSerializationError

from schemas.envelope import Envelope
from schemas.events import event_from
from services.common.settings import CommonSettings

log = structlog.get_logger("sendstream.db")

_MIGRATION_LOCK = 0x5E4D57  # pg_advisory_xact_lock key: one migrator at a time across processes


async def init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


def json_array(events: Sequence[Envelope]) -> str:
    """Events as one JSON array (a processed_events row's outputs), each serialised by pydantic itself. A
    string that is not UTF-8 (a lone surrogate) is escaped as the json module does, and left for PostgreSQL
    to refuse, as it refuses it in any event: an error on what the event says (broker.is_content_error)."""
    try:
        return "[" + ",".join(e.model_dump_json() for e in events) + "]"
    except PydanticSerializationError:
        return json.dumps([e.model_dump(mode="json") for e in events])


async def _keep(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's reset query: we keep no session state, and it costs a round trip per use."""


async def create_pool(settings: CommonSettings) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        settings.database_url,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        init=init_connection,
        reset=_keep,
    )


async def migrate(pool: asyncpg.Pool) -> list[str]:
    """Apply every migration in services/common/sql not yet applied, in name order; return those applied."""
    files = sorted(
        (f for f in resources.files("services.common.sql").iterdir() if f.name.endswith(".sql")),
        key=lambda f: f.name,
    )
    applied: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for f in files:
            if f.name in done:
                continue
            await conn.execute(f.read_text())
            await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", f.name)
            applied.append(f.name)
    if applied:
        log.info("migrations applied", migrations=applied)
    return applied


async def claim_many(conn: asyncpg.Connection, consumer: str, event_ids: list[UUID]) -> set[UUID]:
    """Inside a transaction: claim many events at once; returns those that were new to `consumer`."""
    rows = await conn.fetch(
        """INSERT INTO processed_events (consumer, event_id) SELECT $1, unnest($2::uuid[])
           ON CONFLICT DO NOTHING RETURNING event_id""",
        consumer,
        list(dict.fromkeys(event_ids)),
    )
    return {r["event_id"] for r in rows}


async def claim_new(conn: asyncpg.Connection, consumer: str, events: list[Envelope]) -> list[Envelope]:
    """Inside a transaction: claim `events`; returns those new to `consumer`, each once, in their order."""
    return each_once(events, await claim_many(conn, consumer, [e.event_id for e in events]))


def each_once(events: list[Envelope], claimed: set[UUID]) -> list[Envelope]:
    """The `events` whose ids were `claimed`, in their order, an event twice in one batch once."""
    pending = set(claimed)
    new = []
    for event in events:
        if event.event_id in pending:
            pending.discard(event.event_id)
            new.append(event)
    return new


async def recorded(
    conn: asyncpg.Connection | asyncpg.Pool, consumer: str, event_id: UUID
) -> list[Envelope] | None:
    """The events recorded when `consumer` handled `event_id`, or None if it has not."""
    outputs = await conn.fetchval(
        "SELECT outputs FROM processed_events WHERE consumer = $1 AND event_id = $2", consumer, event_id
    )
    if outputs is None:
        return None
    return [event_from(o) for o in outputs]


async def recorded_many(
    conn: asyncpg.Connection | asyncpg.Pool, consumer: str, event_ids: list[UUID]
) -> dict[UUID, list[Envelope]]:
    """`recorded` for many events at once: only those already handled appear in the result."""
    if not event_ids:
        return {}
    rows = await conn.fetch(
        "SELECT event_id, outputs FROM processed_events WHERE consumer = $1 AND event_id = ANY($2::uuid[])",
        consumer,
        event_ids,
    )
    return {r["event_id"]: [event_from(o) for o in r["outputs"] or []] for r in rows}


async def record(
    conn: asyncpg.Connection | asyncpg.Pool, consumer: str, event_id: UUID, outputs: Sequence[Envelope]
) -> tuple[list[Envelope], bool]:
    """Record the outcome of a side effect done outside a transaction.

    The first record wins: returns the recorded outputs and whether they are the ones given here.
    """
    row = await conn.fetchval(
        """INSERT INTO processed_events (consumer, event_id, outputs) VALUES ($1, $2, $3)
           ON CONFLICT (consumer, event_id) DO NOTHING RETURNING true""",
        consumer,
        event_id,
        [o.model_dump(mode="json") for o in outputs],
    )
    if row:
        return list(outputs), True
    return await recorded(conn, consumer, event_id) or [], False


async def forget_processed(pool: asyncpg.Pool, older_than: timedelta, chunk: int = 10_000) -> int:
    """Delete tracking rows older than `older_than`; returns how many."""
    return await delete_in_chunks(
        pool, "processed_events", "processed_at < now() - $1::interval", older_than, chunk
    )


async def delete_in_chunks(
    pool: asyncpg.Pool, table: str, where: str, arg: object, chunk: int = 10_000
) -> int:
    """Delete the rows of `table` matching `where` (one parameter, $1), a chunk per statement (no long
    locks); returns how many."""
    removed = 0
    while True:
        done = await pool.execute(
            f"""DELETE FROM {table} WHERE ctid = ANY(ARRAY(
                   SELECT ctid FROM {table} WHERE {where} LIMIT $2))""",
            arg,
            chunk,
        )
        count = int(done.split()[-1])
        removed += count
        if count < chunk:
            return removed
