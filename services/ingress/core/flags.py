"""A message's flags and labels changed by its owner (read, starred, its own labels), and messages deleted,
for every dialect: the change is an event (MessageFlagsChanged, MessageDeleted) the views apply, latest
change winning; the answer waits (briefly) until the views show it, so the caller's next read sees it."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid5

from schemas.envelope import Envelope
from schemas.events import (
    MessageDeleted,
    MessageDeletedPayload,
    MessageFlagsChanged,
    MessageFlagsChangedPayload,
)
from schemas.ids import new_id
from services.common.domain import views
from services.ingress.context import Context


async def settle(c: Context, event: Envelope, shown: str) -> None:
    """Publish a change of a message and wait (briefly) until the views show it (`shown`: SQL true of
    the row once they do, `$2` the event's time), so the caller's next read sees it."""
    await c.publish([event])
    probe = f"SELECT {shown} FROM messages WHERE id = $1"
    await views.shown(c.pool, probe, event.payload.message_id, event.occurred_at)


async def change(
    c: Context, identity: Any, message_id: Any, correlation_id: str, *, is_read: bool | None = None,
    is_starred: bool | None = None, labels: list[str] | None = None,
) -> None:
    """Set what is given of a message's flags and labels (None: as it is)."""
    event = MessageFlagsChanged(
        event_id=new_id(), org_id=identity["org_id"], identity_id=identity["id"], correlation_id=correlation_id,
        payload=MessageFlagsChangedPayload(message_id=message_id, is_read=is_read, is_starred=is_starred, labels=labels),
    )  # fmt: skip
    changed = (("read", is_read), ("starred", is_starred), ("labels", labels))
    await settle(c, event, " AND ".join(f"{column}_changed_at >= $2" for column, v in changed if v is not None))


async def delete(c: Context, identity: Any, message_ids: list[UUID], correlation_id: str) -> None:
    """Delete the identity's messages: gone from every dialect's reads (their audit trail stays); asking
    again changes nothing (each deletion's event id is the message's)."""
    events = [
        MessageDeleted(
            event_id=uuid5(m, "deleted"),
            org_id=identity["org_id"],
            identity_id=identity["id"],
            correlation_id=correlation_id,
            payload=MessageDeletedPayload(message_id=m),
        )
        for m in message_ids
    ]
    if not events:
        return
    await c.publish(events)
    probe = "SELECT bool_and(deleted_at IS NOT NULL AND deleted_at <= $2) FROM messages WHERE id = ANY($1::uuid[])"
    await views.shown(c.pool, probe, list(message_ids), events[-1].occurred_at)
