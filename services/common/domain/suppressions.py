"""The suppressions view, as the projections keep it from the log and as the ingress writes it through
before it answers: decide reads it when it decides a send, so once the API said an address is
suppressed (an unsubscribe, `POST /v1/suppressions`), no send asked for after that answer goes to it.

One statement for adding and removing, so that they commute: only a later change moves a row, and an
address suppressed already keeps its first cause. Applying an event twice (the ingress, then the
projections) changes nothing the second time.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from schemas.envelope import Envelope
from schemas.events import SuppressionAdded, SuppressionRemoved

SUPPRESS = """
INSERT INTO suppressions (org_id, address, active, reason, message_id, event_id, cause_id, created_at, changed_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
ON CONFLICT (org_id, address) DO UPDATE SET
    active = EXCLUDED.active,
    reason = CASE WHEN suppressions.active AND EXCLUDED.active THEN suppressions.reason ELSE EXCLUDED.reason END,
    message_id = CASE WHEN suppressions.active AND EXCLUDED.active THEN suppressions.message_id ELSE EXCLUDED.message_id END,
    event_id = CASE WHEN suppressions.active AND EXCLUDED.active THEN suppressions.event_id ELSE EXCLUDED.event_id END,
    cause_id = CASE WHEN suppressions.active AND EXCLUDED.active THEN suppressions.cause_id ELSE EXCLUDED.cause_id END,
    created_at = CASE WHEN suppressions.active AND EXCLUDED.active THEN suppressions.created_at ELSE EXCLUDED.created_at END,
    changed_at = EXCLUDED.changed_at
WHERE suppressions.changed_at < EXCLUDED.changed_at
"""


def change(event: Envelope) -> tuple[Any, ...] | None:
    """SUPPRESS's parameters for a suppression event (None for any other event)."""
    match event:
        case SuppressionAdded(payload=p):
            return (event.org_id, p.address, True, p.reason, p.message_id, event.event_id, event.causation_id,
                    event.occurred_at)  # fmt: skip
        case SuppressionRemoved(payload=p):
            return (event.org_id, p.address, False, "manual", None, event.event_id, None, event.occurred_at)
    return None


async def write_through(pool: asyncpg.Pool, events: list[Envelope]) -> None:
    """Apply suppression events to the view now (they are on the log already: the projections apply
    them again, to no effect)."""
    changes = [c for e in events if (c := change(e)) is not None]
    if changes:
        await pool.executemany(SUPPRESS, changes)
