"""Suppressing an address and mailing it again, for every dialect (the identities dialect's
`/v1/suppressions`, AgentMail's `send` block list): a fact on the suppressions topic, written through to
the view decide reads before the answer (read-your-writes: a send asked for after it is decided with it)."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from schemas.events import (
    SuppressionAdded,
    SuppressionAddedPayload,
    SuppressionRemoved,
    SuppressionRemovedPayload,
)
from services.common.domain import suppressions
from services.ingress.context import Context

ACTIVE = "SELECT * FROM suppressions WHERE org_id = $1 AND address = $2 AND active"


async def find(c: Context, org_id: UUID, address: str) -> asyncpg.Record | None:
    return await c.pool.fetchrow(ACTIVE, org_id, address.lower())


async def add(c: Context, org_id: UUID, address: str, reason: str, correlation_id: str) -> SuppressionAdded:
    event = SuppressionAdded(
        org_id=org_id, correlation_id=correlation_id,
        payload=SuppressionAddedPayload(address=address.lower(), reason=reason),
    )  # fmt: skip
    await c.publish([event])
    await suppressions.write_through(c.pool, [event])
    return event


async def remove(c: Context, org_id: UUID, address: str, correlation_id: str) -> None:
    removed = [
        SuppressionRemoved(
            org_id=org_id, correlation_id=correlation_id, payload=SuppressionRemovedPayload(address=address.lower())
        )
    ]
    await c.publish(removed)
    await suppressions.write_through(c.pool, removed)
