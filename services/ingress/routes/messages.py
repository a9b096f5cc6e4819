"""Shared by every dialect: a message's audit trail (SPEC 3.4), read from the archive (projections/archive.py)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from aiohttp import web

from schemas import ids
from schemas.api.common import iso
from schemas.api.identities import AuditEvent, AuditTrail, MessageDetail, MessageFile, found_message_out
from schemas.api.scheduled import Cancelled, ScheduledList, ScheduledSend
from services.common.domain import views
from services.ingress import cursors
from services.ingress.context import ctx
from services.ingress.core import directory, scheduling
from services.ingress.http import Call, json_model, not_found, query_limit, route
from services.ingress.routes import downloads


@route(
    "GET", "/v1/messages/{messageId}", scope="read", tag="messages", response=MessageDetail, errors=(404, 503),
    summary="A message of any identity of the organization, with signed links to its files and raw form",
)  # fmt: skip
async def get_message(call: Call) -> web.Response:
    c = ctx(call)
    row = await views.message(c.pool, call.principal.org_id, ids.parse("message", call.param("messageId")))
    if not row:
        raise not_found("Message")
    files = [
        MessageFile(
            filename=a["filename"], contentType=a["content_type"], size=a["size"],
            downloadUrl=downloads.link(c, row["id"], a["sha256"], a["filename"])[0],
        )
        for a in row["attachments"]
    ]  # fmt: skip
    raw = downloads.link(c, row["id"], row["raw_sha256"], "message.eml")[0] if row["raw_sha256"] else None
    return json_model(
        MessageDetail(
            **found_message_out(row).model_dump(by_alias=True), identity=row["inbox_address"], attachments=files,
            rawUrl=raw,
        )
    )  # fmt: skip


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
    await scheduling.cancel(ctx(call), call.principal.org_id, message_id, call.request_id, call.principal.key_id)
    return json_model(Cancelled(id=call.param("messageId"), status="cancelled"))


@route(
    "GET", "/v1/scheduled", scope="read", tag="messages", response=ScheduledList, errors=(400, 404),
    summary="Scheduled sends still waiting, soonest first (`identity`: a handle; `cursor`, `limit` 1-100)",
)  # fmt: skip
async def list_scheduled(call: Call) -> web.Response:
    c, query = ctx(call), call.request.query
    limit = query_limit(call, 50)
    at, after = cursors.decode(query["cursor"], datetime, UUID) if query.get("cursor") else (None, None)
    identity = await directory.identity_named(c, call.principal.org_id, query.get("identity"))
    rows = await c.pool.fetch(
        """SELECT s.message_id, s.send_at, i.handle, s.to_addrs, s.subject, s.conv_id
             FROM scheduled_sends s JOIN identities i ON i.id = s.identity_id
            WHERE s.org_id = $1 AND s.state = 'scheduled' AND ($2::uuid IS NULL OR s.identity_id = $2)
              AND ($3::timestamptz IS NULL OR (s.send_at, s.message_id) > ($3, $4))
            ORDER BY s.send_at, s.message_id LIMIT $5""",
        call.principal.org_id, identity["id"] if identity else None, at, after, limit + 1,
    )  # fmt: skip
    more, rows = len(rows) > limit, rows[:limit]
    return json_model(
        ScheduledList(
            data=[scheduled_out(r) for r in rows],
            nextCursor=cursors.encode(rows[-1]["send_at"], rows[-1]["message_id"]) if more else None,
            hasMore=more,
        )
    )


def scheduled_out(r) -> ScheduledSend:
    conv = ids.render("conversation", r["conv_id"]) if r["conv_id"] else ""
    return ScheduledSend(
        messageId=ids.render("message", r["message_id"]), identity=r["handle"], to=r["to_addrs"] or [],
        subject=r["subject"] or "", convId=conv, sendAt=iso(r["send_at"]),
    )  # fmt: skip
