"""Shared by every dialect: a message's audit trail (SPEC 3.4), read from the archive (projections/archive.py)."""

from __future__ import annotations

from aiohttp import web

from schemas import ids
from schemas.api.common import iso
from schemas.api.identities import AuditEvent, AuditTrail, Cancelled
from services.ingress.context import ctx
from services.ingress.core import scheduling
from services.ingress.http import Call, json_model, not_found, route


@route(
    "GET",
    "/v1/messages/{messageId}/events",
    scope="read",
    tag="messages",
    summary="Every event of a message, in order",
    response=AuditTrail,
    errors=(404,),
)
async def message_events(call: Call) -> web.Response:
    message_id = ids.parse("message", call.param("messageId"))
    rows = message_id and await ctx(call).pool.fetch(
        """SELECT event_id, type, occurred_at, event FROM event_archive
            WHERE message_ids @> ARRAY[$1]::uuid[] AND org_id = $2 ORDER BY occurred_at, event_id""",
        message_id,
        call.principal.org_id,
    )
    if not rows:
        raise not_found("Message")
    return json_model(
        AuditTrail(
            data=[
                AuditEvent(
                    id=str(r["event_id"]), type=r["type"], occurredAt=iso(r["occurred_at"]), event=r["event"]
                )
                for r in rows
            ]
        )
    )


@route(
    "POST", "/v1/messages/{messageId}/cancel", scope="send", tag="messages", response=Cancelled,
    errors=(404, 409, 503),
    summary="Cancel a scheduled send before it fires (repeating it is harmless); 409 once it was sent",
)  # fmt: skip
async def cancel_message(call: Call) -> web.Response:
    message_id = ids.parse("message", call.param("messageId"))
    await scheduling.cancel(ctx(call), call.principal.org_id, message_id, call.request_id)
    return json_model(Cancelled(id=call.param("messageId"), status="cancelled"))
