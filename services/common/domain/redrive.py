"""Nothing on its way out is lost with the log: each message's next event is kept in PostgreSQL until
the message reaches an end, and re-published when it is overdue (migration 008_redrives.sql).

- `watch`: the step that makes a message's next event records it, with when it is overdue: decide's
  publisher for the sends it accepted, before publishing them (services/decide/app.py), dispatch with a
  retry or a lease, the ingress for a request it answered before it was decided;
- settled: the projections remove it once the message is sent, failed or rejected, in the statement
  that claims the event that ends it (projections/app.py);
- `redrive_due`: the scheduler re-publishes what is overdue, under the same event_id, waiting longer
  after each attempt; every consumer is idempotent on event_id, so a re-drive of something that was
  only slow changes nothing;
- `log_lost`: after the log itself was lost (the embedded broker restarted), everything in flight is
  overdue at once; `log_changed` finds that out from the broker's cluster id, which the scheduler
  checks before each re-drive.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from uuid import UUID

import asyncpg
from prometheus_client import Counter

from schemas.envelope import Envelope
from schemas.events import event_from
from services.common.domain.decided import DECIDER

REDRIVEN = Counter(
    "sendstream_redriven_total", "Overdue events re-published for messages that made no progress"
)
LONGEST_WAIT_S = 3600.0


async def watch(
    conn: asyncpg.Connection | asyncpg.Pool, message_id: UUID, event: Envelope, due_at: datetime
) -> None:
    """`event` is what moves `message_id` on next; re-publish it if nothing happened by `due_at`."""
    await watch_each(conn, [(message_id, event)], due_at)


async def watch_each(
    conn: asyncpg.Connection | asyncpg.Pool, watched: list[tuple[UUID, Envelope]], due_at: datetime
) -> None:
    """`watch` for each (message, event), in one statement."""
    await conn.execute(
        """INSERT INTO redrives (message_id, event, due_at)
           SELECT m, e, $3 FROM unnest($1::uuid[], $2::jsonb[]) AS w(m, e)
           ON CONFLICT (message_id) DO UPDATE SET event = EXCLUDED.event, due_at = EXCLUDED.due_at, attempts = 0""",
        [m for m, _ in watched],
        [e.model_dump(mode="json") for _, e in watched],
        due_at,
    )


async def watch_many(pool: asyncpg.Pool, accepted: list[Envelope], after_s: float) -> None:
    """Watch each newly accepted send (decide's publisher, before it publishes them): a message that
    already has a watch keeps it (it can only be a later step's)."""
    if accepted:
        await pool.execute(
            """INSERT INTO redrives (message_id, event, due_at)
               SELECT m, e, now() + make_interval(secs => $3) FROM unnest($1::uuid[], $2::jsonb[]) AS w(m, e)
               ON CONFLICT (message_id) DO NOTHING""",
            [d.payload.message_id for d in accepted],
            [d.model_dump(mode="json") for d in accepted],
            after_s,
        )


async def watch_undecided(
    pool: asyncpg.Pool, request: Envelope, message_ids: Iterable[UUID], after_s: float
) -> None:
    """A request answered before it was decided: re-publish it if it is still undecided after `after_s`
    (a request decided meanwhile has its decisions watched by the decider already)."""
    await pool.execute(
        """INSERT INTO redrives (message_id, event, due_at)
           SELECT m, $2::jsonb, now() + make_interval(secs => $3) FROM unnest($1::uuid[]) AS m
            WHERE NOT EXISTS (SELECT 1 FROM processed_events WHERE consumer = $4 AND event_id = $5)
           ON CONFLICT (message_id) DO NOTHING""",
        list(message_ids),
        request.model_dump(mode="json"),
        after_s,
        DECIDER,
        request.event_id,
    )


async def redrive_due(conn: asyncpg.Connection, after_s: float, limit: int) -> list[Envelope]:
    """Inside a transaction: take up to `limit` overdue events no other scheduler holds, move each one's
    next due time further out (twice as far each attempt, at most an hour), and return them to publish.

    A scheduled message cancelled before its firing was decided never moves on (its firing decides
    nothing): its watch, due, is dropped instead."""
    await conn.execute(
        """DELETE FROM redrives r USING scheduled_sends s
            WHERE r.due_at <= now() AND s.message_id = r.message_id AND s.state = 'cancelled'"""
    )
    rows = await conn.fetch(
        """UPDATE redrives r SET attempts = r.attempts + 1,
                  due_at = now() + make_interval(secs => least($1 * 2 ^ r.attempts, $3))
             FROM (SELECT message_id FROM redrives WHERE due_at <= now()
                    ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED) AS due
            WHERE r.message_id = due.message_id
        RETURNING r.event""",
        after_s,
        limit,
        LONGEST_WAIT_S,
    )
    REDRIVEN.inc(len(rows))
    return [event_from(r["event"]) for r in rows]


async def log_lost(pool: asyncpg.Pool | asyncpg.Connection) -> int:
    """The log was lost (a broker that keeps it in memory started anew): every watched event that was
    already meant to be on it is overdue now, and its waits start short again (the attempts counted
    were against the log that is gone). A retry not yet due keeps its time (its timer is still in
    PostgreSQL). Returns how many messages were in flight."""
    done = await pool.execute(
        """UPDATE redrives SET due_at = least(due_at, now()), attempts = 0
            WHERE (event->>'occurred_at')::timestamptz <= now()"""
    )
    return int(done.split()[-1])


async def log_changed(conn: asyncpg.Connection, cluster_id: str) -> int | None:
    """The broker is `cluster_id`: if the re-drives were written against another cluster, its log is
    not this one, and everything in flight is re-driven now (`log_lost`). Returns how many messages
    were in flight then, or None if the log is the one seen before (or the first one seen)."""
    async with conn.transaction():
        known = await conn.fetchval("SELECT cluster_id FROM log_identity FOR UPDATE")
        if known == cluster_id:
            return None
        await conn.execute(
            """INSERT INTO log_identity (cluster_id) VALUES ($1)
               ON CONFLICT (only_row) DO UPDATE SET cluster_id = EXCLUDED.cluster_id, seen_at = now()""",
            cluster_id,
        )
        return None if known is None else await log_lost(conn)
