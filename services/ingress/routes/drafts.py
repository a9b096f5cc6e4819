"""Shared by every dialect: drafts a person approves (SPEC 3.5). A send of an identity with
`requireApproval` (through any dialect), or one made at `POST /v1/identities/{handle}/drafts`, waits
here until an admin key or one with the `approve` scope approves it."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg
from aiohttp import web

from schemas import ids
from schemas.api.common import iso
from schemas.api.drafts import ApprovedDraft, ApproveDraft, Draft, DraftList, RejectDraft, UpdateDraft
from schemas.api.identities import send_response
from schemas.events import Content
from schemas.schedule import ScheduleError
from services.common.domain import bodies
from services.ingress import cursors
from services.ingress.context import ctx
from services.ingress.core import directory, drafts
from services.ingress.core.errors import NotFound
from services.ingress.http import ApiError, Call, json_model, query_limit, route

STATUSES = ("pending", "approved", "rejected", "cancelled")
SHOWN = "SELECT d.*, i.handle FROM drafts d JOIN identities i ON i.id = d.identity_id"


def draft_out(row: asyncpg.Record, content: Content | None = None) -> Draft:
    """A draft as the API shows it (`content`: its bodies brought back from the blob store, if they were put there)."""
    p = drafts.request_of(row).payload
    content = content or p.content
    wanted = drafts.wanted_of(row)
    return Draft(
        id=ids.render("draft", row["id"]), identity=row["handle"], status=row["status"],
        to=drafts.recipients(row),
        subject=content.subject, text=content.text, html=content.html, sendAt=iso(p.send_at),
        messageIds=[ids.render("message", m.message_id) for m in wanted],
        convIds=[ids.render("conversation", m.conv_id) for m in wanted], reason=row["reason"],
        createdAt=iso(row["created_at"]), updatedAt=iso(row["updated_at"]),
    )  # fmt: skip


async def shown(call: Call, draft_id: UUID, status: int = 200) -> web.Response:
    """The draft as it now is, whole."""
    c = ctx(call)
    row = await c.pool.fetchrow(f"{SHOWN} WHERE d.id = $1 AND d.org_id = $2", draft_id, call.principal.org_id)
    if not row:
        raise NotFound("draft")
    return json_model(draft_out(row, await bodies.inline(c.blobs, drafts.request_of(row).payload.content)), status)


def draft_id(call: Call) -> UUID | None:
    return ids.parse("draft", call.param("draftId"))


@route(
    "GET", "/v1/drafts", scope="read", tag="drafts", response=DraftList, errors=(400, 404),
    summary="Drafts, oldest first (`status`: pending, approved, rejected or cancelled; `identity`: a handle; "
    "`cursor`, `limit` 1-100)",
)  # fmt: skip
async def list_drafts(call: Call) -> web.Response:
    c, query = ctx(call), call.request.query
    limit = query_limit(call, 50)
    status = query.get("status")
    if status is not None and status not in STATUSES:
        raise ApiError(400, "invalid_request", f"status: must be one of {', '.join(STATUSES)}")
    at, after = cursors.decode(query["cursor"], datetime, UUID) if query.get("cursor") else (None, None)
    identity = await directory.identity_named(c, call.principal.org_id, query.get("identity"))
    rows = await c.pool.fetch(
        f"""{SHOWN} WHERE d.org_id = $1 AND ($2::text IS NULL OR d.status = $2)
              AND ($3::uuid IS NULL OR d.identity_id = $3)
              AND ($4::timestamptz IS NULL OR (d.created_at, d.id) > ($4, $5))
            ORDER BY d.created_at, d.id LIMIT $6""",
        call.principal.org_id, status, identity["id"] if identity else None, at, after, limit + 1,
    )  # fmt: skip
    more, rows = len(rows) > limit, rows[:limit]
    return json_model(
        DraftList(
            data=[draft_out(r) for r in rows],
            nextCursor=cursors.encode(rows[-1]["created_at"], rows[-1]["id"]) if more else None,
            hasMore=more,
        )
    )


@route(
    "GET", "/v1/drafts/{draftId}", scope="read", tag="drafts", response=Draft, errors=(404,),
    summary="A draft, whole",
)  # fmt: skip
async def get_draft(call: Call) -> web.Response:
    await drafts.find(ctx(call), call.principal.org_id, draft_id(call))
    return await shown(call, draft_id(call))


@route(
    "PATCH", "/v1/drafts/{draftId}", scope="send", tag="drafts", body=UpdateDraft, response=Draft,
    errors=(400, 404, 409), summary="Edit a pending draft: subject, text, html, sendAt (409 once decided)",
)  # fmt: skip
async def update_draft(call: Call) -> web.Response:
    b: UpdateDraft = call.body
    if b.timezone is not None and b.sendAt is None:
        raise ApiError(400, "invalid_request", "timezone: is only for a local sendAt")
    changes = b.model_dump(exclude_unset=True)
    try:
        row = await drafts.update(
            ctx(call), call.principal.org_id, draft_id(call), changes, call.principal.key_id, call.request_id
        )
    except ScheduleError as exc:
        raise ApiError(400, "invalid_request", str(exc)) from None
    return await shown(call, row["id"])


@route(
    "POST", "/v1/drafts/{draftId}/approve", scope="approve", tag="drafts", body=ApproveDraft, body_optional=True,
    response=ApprovedDraft, status=202, errors=(400, 404, 409, 503), answers={429: ApprovedDraft},
    summary="Send (or schedule) a draft, exactly once however often it is approved, answered as the send "
    "would be; needs an admin key or the `approve` scope",
)  # fmt: skip
async def approve_draft(call: Call) -> web.Response:
    c = ctx(call)
    b: ApproveDraft = call.body
    row, outcome = await drafts.approve(
        c, call.principal.org_id, draft_id(call), call.principal.key_id, call.request_id, b.ifUpdatedAt
    )
    shown_row = await c.pool.fetchrow(f"{SHOWN} WHERE d.id = $1", row["id"])
    sent, status = send_response(outcome, shown_row["handle"])
    return json_model(ApprovedDraft(**sent.model_dump(), draft=draft_out(shown_row)), status)


@route(
    "POST", "/v1/drafts/{draftId}/reject", scope="approve", tag="drafts", body=RejectDraft, response=Draft,
    errors=(400, 404, 409), summary="Reject a pending draft with a reason: it is never sent (409 once approved)",
)  # fmt: skip
async def reject_draft(call: Call) -> web.Response:
    b: RejectDraft = call.body
    row = await drafts.reject(
        ctx(call), call.principal.org_id, draft_id(call), b.reason, call.principal.key_id, call.request_id
    )
    return await shown(call, row["id"])
