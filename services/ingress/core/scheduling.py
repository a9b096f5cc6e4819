"""Scheduled sends (SPEC 3.5) for every dialect: when a request says it goes out, and cancelling one.

The cancel is a request decided on the identity's partition, in one order with the send's firing, so the
answer says which came first: a message cancelled (now or before) stays unsent; one that fired cannot
be cancelled. A message held in a draft is cancelled with its draft (services/ingress/core/drafts.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from schemas.api.common import Later, LaterSnake
from schemas.events import CancelRequested, CancelRequestedPayload
from schemas.schedule import ScheduleError, Timing
from services.ingress.context import Context
from services.ingress.core import drafts
from services.ingress.core.errors import Conflict, Invalid, NotFound, Unavailable


def when(body: Later | LaterSnake, *, reply: bool) -> Timing:
    """When the request `body` goes out (`reply`: into an existing conversation); Invalid naming the field."""
    try:
        return body.timing(datetime.now(UTC), reply=reply)
    except ScheduleError as exc:
        raise Invalid(str(exc)) from None

STATE = "SELECT identity_id, state FROM scheduled_sends WHERE message_id = $1 AND org_id = $2"


async def cancel(
    c: Context, org_id: UUID, message_id: UUID | None, correlation_id: str, by: UUID | None = None
) -> None:
    """Cancel a scheduled message of the organization's, or one held in a draft for approval. NotFound if
    it has no such message; Conflict (`already_sent`) once it fired or if it was never scheduled;
    repeating a cancel is harmless."""
    row = message_id and await c.pool.fetchrow(STATE, message_id, org_id)
    if not row and message_id and await drafts.cancel_message(c, org_id, message_id, by, correlation_id):
        return
    if not row:
        sent = message_id and await c.pool.fetchval(
            "SELECT true FROM messages WHERE id = $1 AND org_id = $2", message_id, org_id
        )
        if sent:
            raise Conflict("already_sent: the message was not scheduled, or has been sent")
        raise NotFound("message")
    if row["state"] == "scheduled":
        request = CancelRequested(
            org_id=org_id, identity_id=row["identity_id"], correlation_id=correlation_id,
            payload=CancelRequestedPayload(message_id=message_id),
        )  # fmt: skip
        c.waiter.expect(request.event_id)
        try:
            await c.publish([request])
        except BaseException:
            c.waiter.forget(request.event_id)
            raise
        await c.waiter.wait(request.event_id, c.settings.decision_timeout_s)
        row = await c.pool.fetchrow(STATE, message_id, org_id)
        if row["state"] == "scheduled":  # not decided in time: it still will be
            raise Unavailable("the cancel was not decided in time; repeat it (repeating it is harmless)")
    if row["state"] == "fired":
        raise Conflict("already_sent: the message was sent before it could be cancelled")
