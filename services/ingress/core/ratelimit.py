"""Per-organization request limits over a rolling window, shared by every ingress process: the counts
are PostgreSQL rows by minute, and each bucket's admissions are serialized by a transaction-level
advisory lock, so two processes can never both admit the last request."""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from schemas import dialects
from services.common import db
from services.common.settings import IngressSettings
from services.ingress.core.errors import RateLimited

USED = """
SELECT coalesce(sum(count), 0) AS n, extract(epoch FROM min(minute) + make_interval(secs => $3) - now()) AS free_in
  FROM request_counts WHERE org_id = $1 AND bucket = $2 AND minute > now() - make_interval(secs => $3)
"""
COUNT = """
INSERT INTO request_counts (org_id, bucket, minute, count) VALUES ($1, $2, date_trunc('minute', now()), 1)
ON CONFLICT (org_id, bucket, minute) DO UPDATE SET count = request_counts.count + 1
"""


@dataclass(frozen=True)
class Budget:
    """A limit on requests of one purpose: `limit` per rolling window, named `what` in the 429."""

    bucket: str
    limit: int
    what: str


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


def send_budgets(settings: IngressSettings, identity: Any, route: str) -> list[Budget]:
    """What a send through `route` (the dialect of the route it came by) to `identity` spends: the hourly
    budget of the route's dialect and that of the identity's own (the dialect it was made in), so every
    route to one inbox or one mailbox counts against the same limit. A dialect without one (identities)
    holds its sends by daily caps and their mailboxes' limits (decide)."""
    budgets = []
    for dialect in dialects.REGISTERED.values():
        if (b := dialect.hourly_budget) and dialect.name in (route, identity["dialect"]):
            bucket = b.bucket.format(identity_id=identity["id"])
            budgets.append(Budget(bucket, getattr(settings, b.setting), b.unit))
    return budgets


def _lock(org_id: UUID, bucket: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{org_id}/{bucket}".encode()).digest()[:8], "big", signed=True)


async def admit(pool: asyncpg.Pool, org_id: UUID, budgets: list[Budget], window_s: int = 3600) -> list[Window]:
    """Count one request of `org_id` against every one of `budgets`, or against none and raise RateLimited
    (with when to retry, and the X-RateLimit-* headers) if one of them admitted its `limit` requests within
    the last `window_s` seconds. Each bucket's admissions are serialised by a transaction-level advisory
    lock taken before its count is read (by a statement of its own, whose snapshot sees every admission
    committed before it), so two processes can never both admit the last request."""
    if not budgets:
        return []
    async with pool.acquire() as conn, conn.transaction():
        for lock in sorted(_lock(org_id, b.bucket) for b in budgets):
            await conn.execute("SELECT pg_advisory_xact_lock($1)", lock)
        windows = []
        for b in budgets:
            used, free_in = await conn.fetchrow(USED, org_id, b.bucket, window_s)
            free_in = max(1, math.ceil(float(free_in if free_in is not None else window_s)))
            reset_at = math.ceil(time.time()) + free_in
            if used >= b.limit:
                raise RateLimited(
                    f"Rate limit exceeded ({b.limit} {b.what} per hour)", free_in,
                    Window(b.limit, 0, reset_at).headers(),
                )  # fmt: skip
            windows.append(Window(b.limit, max(b.limit - used - 1, 0), reset_at))
        for b in budgets:
            await conn.execute(COUNT, org_id, b.bucket)
        return windows


async def sweep(pool: asyncpg.Pool, window_s: int = 3600) -> int:
    """Forget counts that left the window long ago; returns how many."""
    return await db.delete_in_chunks(
        pool, "request_counts", "minute < now() - make_interval(secs => $1::double precision)", 2 * window_s
    )
