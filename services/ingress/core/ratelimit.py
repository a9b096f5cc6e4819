"""Per-organization request limits over a rolling window, shared by every ingress process: the counts
are PostgreSQL rows by minute, and one organization's admissions are serialized by a transaction-level
advisory lock, so two processes can never both admit the last request."""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from services.common import db
from services.ingress.core.errors import RateLimited

ADMIT = """
WITH lock AS (SELECT pg_advisory_xact_lock($4)),
     used AS (SELECT coalesce(sum(count), 0) AS n, min(minute) AS oldest FROM request_counts, lock
               WHERE org_id = $1 AND bucket = $2 AND minute > now() - make_interval(secs => $3))
SELECT n, extract(epoch FROM oldest + make_interval(secs => $3) - now()) AS free_in FROM used
"""
COUNT = """
INSERT INTO request_counts (org_id, bucket, minute, count) VALUES ($1, $2, date_trunc('minute', now()), 1)
ON CONFLICT (org_id, bucket, minute) DO UPDATE SET count = request_counts.count + 1
"""


@dataclass(frozen=True)
class Window:
    """Where a bucket stands after an admission: its limit, what is left, and when (Unix time) the
    oldest request counted leaves the window."""

    limit: int
    remaining: int
    reset_at: int

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_at),
        }


async def admit(
    pool: asyncpg.Pool, org_id: UUID, bucket: str, limit: int, window_s: int = 3600, what: str = "requests"
) -> Window:
    """Count one request of `org_id` for `bucket`, or raise RateLimited (with when to retry, and the
    X-RateLimit-* headers) if `limit` requests were admitted within the last `window_s` seconds."""
    async with pool.acquire() as conn, conn.transaction():
        lock = int.from_bytes(hashlib.sha256(f"{org_id}/{bucket}".encode()).digest()[:8], "big", signed=True)
        used, free_in = await conn.fetchrow(ADMIT, org_id, bucket, window_s, lock)
        free_in = max(1, math.ceil(float(free_in if free_in is not None else window_s)))
        window = Window(limit, max(limit - used - 1, 0), math.ceil(time.time()) + free_in)
        if used >= limit:
            raise RateLimited(
                f"Rate limit exceeded ({limit} {what} per hour)",
                free_in,
                Window(limit, 0, window.reset_at).headers(),
            )
        await conn.execute(COUNT, org_id, bucket)
        return window


async def sweep(pool: asyncpg.Pool, window_s: int = 3600) -> int:
    """Forget counts that left the window long ago; returns how many."""
    return await db.delete_in_chunks(
        pool, "request_counts", "minute < now() - make_interval(secs => $1::double precision)", 2 * window_s
    )
