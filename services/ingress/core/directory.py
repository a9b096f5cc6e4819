"""Finding what a request names, for the caller's organization only: identities (cached per process),
the conversation a reply continues, and what an identity has left of its daily cap."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import asyncpg

from schemas import ids
from services.common.timezones import local_day_start
from services.ingress.context import Context
from services.ingress.core.errors import NotFound


def identity_cache_key(org_id: UUID, handle: str) -> str:
    return f"identity:{org_id}:{handle.lower()}"


async def find_identity(c: Context, org_id: UUID, handle: str) -> asyncpg.Record:
    """The organization's identity with this handle; NotFound if absent or another organization's."""
    key = identity_cache_key(org_id, handle)
    if (cached := c.cache.get(key)) is not None:
        return cached
    row = await c.pool.fetchrow(
        "SELECT * FROM identities WHERE org_id = $1 AND lower(handle) = lower($2) AND deleted_at IS NULL",
        org_id,
        handle,
    )
    if row is None:
        raise NotFound("identity")
    c.cache.put(key, row)
    return row


async def forget_identity(c: Context, row: asyncpg.Record) -> None:
    """After a change: every ingress process reads the identity afresh."""
    await c.cache.invalidate(c.pool, identity_cache_key(row["org_id"], row["handle"]))


async def find_thread(c: Context, identity: asyncpg.Record, conv: str) -> asyncpg.Record:
    """The conversation a reply continues (its id in any accepted form); one of another identity, or
    another organization, is NotFound."""
    conv_id = ids.parse("conversation", conv)
    thread = conv_id and await c.pool.fetchrow(
        "SELECT conv_id, counterpart FROM threads WHERE conv_id = $1 AND identity_id = $2",
        conv_id,
        identity["id"],
    )
    if not thread:
        raise NotFound("conversation")
    return thread


async def remaining_today(c: Context, identity: asyncpg.Record) -> int:
    """Recipients the identity may still send to today, in its time zone."""
    day = local_day_start(datetime.now(UTC), identity["timezone"]).date()
    used = await c.pool.fetchval(
        "SELECT sent FROM identity_usage WHERE identity_id = $1 AND day = $2", identity["id"], day
    )
    return max(identity["daily_cap"] - (used or 0), 0)
