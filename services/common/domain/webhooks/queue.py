"""The deliveries table as a queue: each row is one delivery's durable timer.

`insert` queues deliveries due now (and wakes the deliverers through NOTIFY); `claim` takes due ones
with FOR UPDATE SKIP LOCKED (safe across processes) and leases them by moving their due time past the
request timeout, so a delivery whose deliverer died is due again once the lease runs out.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from uuid import UUID

import asyncpg

from services.common.db import delete_in_chunks

CHANNEL = "sendstream_webhooks"  # NOTIFY: deliveries are due now


def delivery_id(endpoint_id: UUID, event_id: UUID) -> UUID:
    """One delivery per (endpoint, event): a redelivered event finds its delivery already there."""
    return uuid.uuid5(endpoint_id, str(event_id))


async def insert(conn: asyncpg.Connection, rows: list[tuple]) -> None:
    """Queue deliveries, due now, in the order given (their `seq` keeps it); wakes the deliverers."""
    await conn.execute(
        """INSERT INTO webhook_deliveries (id, endpoint_id, org_id, event_id, event_type, message_id, body,
                                           next_attempt_at)
           SELECT id, endpoint_id, org_id, event_id, event_type, message_id, body, now()
             FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::uuid[], $7::text[])
                  WITH ORDINALITY AS d(id, endpoint_id, org_id, event_id, event_type, message_id, body, n)
            ORDER BY n
           ON CONFLICT (id) DO NOTHING""",
        *[list(col) for col in zip(*rows, strict=True)],
    )
    await wake(conn)


async def forget_finished(pool: asyncpg.Pool, older_than: timedelta) -> int:
    """Delete deliveries (and their attempts) delivered or given up longer ago than `older_than`."""
    return await delete_in_chunks(
        pool, "webhook_deliveries", "state <> 'pending' AND created_at < now() - $1::interval", older_than
    )


async def wake(conn: asyncpg.Connection | asyncpg.Pool) -> None:
    await conn.execute(f"NOTIFY {CHANNEL}")


CLAIM = """
WITH inflight AS (SELECT * FROM unnest($2::uuid[], $3::int[]) AS i(endpoint_id, n)),
picked AS (
    SELECT d.id, d.next_attempt_at, d.seq
      FROM webhook_endpoints e
      LEFT JOIN inflight i ON i.endpoint_id = e.id
      CROSS JOIN LATERAL (
          SELECT d.id, d.next_attempt_at, d.seq FROM webhook_deliveries d
           WHERE d.endpoint_id = e.id AND d.state = 'pending' AND d.next_attempt_at <= now()
             -- a message's earlier events reach this endpoint first: d must be its earliest pending one
             -- (a subquery per row, so the (endpoint, message, seq) index answers it whatever the stats say)
             AND (d.message_id IS NULL OR d.seq = (
                 SELECT min(p.seq) FROM webhook_deliveries p
                  WHERE p.endpoint_id = d.endpoint_id AND p.message_id = d.message_id AND p.state = 'pending'))
           ORDER BY d.next_attempt_at, d.seq
           LIMIT greatest($4 - coalesce(i.n, 0), 0)
           FOR UPDATE OF d SKIP LOCKED) d
     WHERE e.enabled
     ORDER BY d.next_attempt_at, d.seq
     LIMIT $1
)
UPDATE webhook_deliveries d
   SET attempts = d.attempts + 1, next_attempt_at = now() + $5::interval
  FROM picked, webhook_endpoints e
 WHERE d.id = picked.id AND e.id = d.endpoint_id
RETURNING d.id, d.endpoint_id, d.org_id, d.event_id, d.event_type, d.message_id, d.body, d.attempts,
          e.url, e.secret, e.previous_secret, e.previous_expires_at, e.dialect
"""


async def claim(
    pool: asyncpg.Pool | asyncpg.Connection,
    limit: int,
    inflight: dict[UUID, int],
    per_endpoint: int,
    lease: timedelta,
) -> list[asyncpg.Record]:
    """Up to `limit` due deliveries, at most `per_endpoint` in flight per endpoint counting `inflight`.

    A delivery is due only when no earlier delivery of the same message to the same endpoint is still
    pending: per endpoint, a message's webhooks arrive in the order of its events.
    """
    return await pool.fetch(CLAIM, limit, list(inflight), list(inflight.values()), per_endpoint, lease)
