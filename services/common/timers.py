"""Durable timers: an event to publish at a due time, kept in PostgreSQL so no restart loses it.

Every delay in the system (SMTP retries, webhook retries, scheduled sends) is one of these. The
scheduler service publishes due timers; the event's own id is the timer's key, so scheduling the
same event twice, or publishing it twice, changes nothing downstream.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from schemas.envelope import Envelope
from schemas.events import event_from

CHANNEL = "sendstream_timers"  # notified when timers are added


async def schedule(conn: asyncpg.Connection, event: Envelope, due_at: datetime) -> None:
    await schedule_many(conn, [event], due_at)


async def schedule_many(conn: asyncpg.Connection, events: list[Envelope], due_at: datetime) -> None:
    """Add timers, and wake the schedulers (on commit) so they need not poll for new ones."""
    await conn.execute(
        """WITH added AS (
               INSERT INTO timers (event_id, due_at, event)
               SELECT e, $2, j FROM unnest($1::uuid[], $3::jsonb[]) AS t(e, j)
               ON CONFLICT (event_id) DO NOTHING RETURNING 1)
           SELECT pg_notify($4, '') FROM (SELECT 1 FROM added LIMIT 1) AS any_added""",
        [e.event_id for e in events],
        due_at,
        [e.model_dump(mode="json") for e in events],
        CHANNEL,
    )


async def take_due(conn: asyncpg.Connection, limit: int) -> list[Envelope]:
    """Inside a transaction: lock up to `limit` due timers no other scheduler holds, and return their events."""
    rows = await conn.fetch(
        """SELECT event_id, event FROM timers WHERE due_at <= now()
            ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED""",
        limit,
    )
    return [event_from(r["event"]) for r in rows]


async def done(conn: asyncpg.Connection | asyncpg.Pool, events: list[Envelope]) -> None:
    await conn.execute("DELETE FROM timers WHERE event_id = ANY($1::uuid[])", [e.event_id for e in events])


async def next_due_in(conn: asyncpg.Connection | asyncpg.Pool) -> float | None:
    """Seconds until the earliest timer is due (0 if overdue), or None when there is none."""
    # Not greatest(..., 0) in SQL: greatest() skips NULL, so "no timers" would read as "due now".
    seconds = await conn.fetchval("SELECT extract(epoch FROM min(due_at) - now()) FROM timers")
    return None if seconds is None else max(float(seconds), 0.0)
