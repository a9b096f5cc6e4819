"""Drafts a person approves (SPEC 3.5), for every dialect: a send held as the request event its approval
publishes (services/ingress/core/send.py: `hold`), edited while pending, approved exactly once, rejected
with a reason, or cancelled by its message's id.

Approving publishes the draft's request and waits for decide like any send, then marks the draft
approved, all under the draft's row lock (an approval and a rejection cannot both win). The request's ids
were fixed when the draft was made: approving again publishes the same event, which decide takes once,
and answers what it decided.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from schemas.api.common import iso
from schemas.commands import Outcome
from schemas.envelope import Envelope
from schemas.events import (
    Content,
    DraftApproved,
    DraftCancelled,
    DraftPayload,
    DraftRejected,
    DraftUpdated,
    RequestedMessage,
    SendRequested,
    event_from,
)
from schemas.schedule import fire_at
from services.common.domain import bodies
from services.ingress.context import Context
from services.ingress.core import directory
from services.ingress.core.errors import Conflict, NotFound
from services.ingress.core.outcome import outcome_of
from services.ingress.core.send import publish_and_wait
from services.ingress.idempotency import IdSource

LOCKED = "SELECT * FROM drafts WHERE id = $1 AND org_id = $2 FOR UPDATE"


def request_of(row: asyncpg.Record) -> Envelope:
    return event_from(row["request"])


def wanted_of(row: asyncpg.Record) -> list[RequestedMessage]:
    return [RequestedMessage.model_validate(m) for m in row["wanted"]]


def recipients(row: asyncpg.Record) -> list[str]:
    """Whom the draft sends to: every message's recipients (a reply's: those it names)."""
    request = request_of(row)
    if isinstance(request, SendRequested):
        return [a for m in wanted_of(row) for a in m.to]
    return list(request.payload.to or [])


def fact(row: asyncpg.Record, kind: type[Envelope], correlation_id: str, by: UUID | None, **extra: Any) -> Envelope:
    return kind(
        org_id=row["org_id"], identity_id=row["identity_id"], correlation_id=correlation_id,
        payload=DraftPayload(draft_id=row["id"], status=row["status"], message_ids=row["message_ids"], by=by, **extra),
    )  # fmt: skip


async def locked(conn: asyncpg.Connection, org_id: UUID, draft_id: UUID | None) -> asyncpg.Record:
    """The organization's draft, locked until the transaction ends; NotFound if it has none such."""
    row = draft_id and await conn.fetchrow(LOCKED, draft_id, org_id)
    if not row:
        raise NotFound("draft")
    return row


async def decided(
    conn: asyncpg.Connection, row: asyncpg.Record, status: str, by: UUID | None, reason: str | None = None
) -> asyncpg.Record:
    """The draft approved, rejected (with `reason`) or cancelled, by the key `by`."""
    return await conn.fetchrow(
        """UPDATE drafts SET status = $2, reason = coalesce($4, reason), decided_by = $3, updated_at = now()
            WHERE id = $1 RETURNING *""",
        row["id"], status, by, reason,
    )  # fmt: skip


async def find(c: Context, org_id: UUID, draft_id: UUID | None) -> asyncpg.Record:
    row = draft_id and await c.pool.fetchrow("SELECT * FROM drafts WHERE id = $1 AND org_id = $2", draft_id, org_id)
    if not row:
        raise NotFound("draft")
    return row


async def approve(
    c: Context, org_id: UUID, draft_id: UUID | None, by: UUID, correlation_id: str,
    if_updated_at: str | None = None,
) -> tuple[asyncpg.Record, Outcome]:  # fmt: skip
    """Send (or schedule) the draft's request, once however often it is approved; the draft, and the
    outcome as the send would have answered it. Conflict if it was rejected or cancelled, or (with
    `if_updated_at`, its `updatedAt` as the approver saw it) edited since."""
    async with directory.change(c) as (conn, facts):
        row = await locked(conn, org_id, draft_id)
        if row["status"] in ("rejected", "cancelled"):
            raise Conflict(f"draft_{row['status']}: the draft was {row['status']}; it cannot be approved")
        if row["status"] == "pending" and if_updated_at is not None and iso(row["updated_at"]) != if_updated_at:
            raise Conflict("draft_changed: the draft was edited after the version you reviewed; review it again")
        # Published under the row's lock: a concurrent approval waits, then finds the decision recorded.
        # Should this transaction not commit, the draft is still pending, and approving it again
        # publishes the same event (decide takes it once).
        answers = await publish_and_wait(c, request_of(row), row["message_ids"], IdSource(row["id"], repeated=True))
        if row["status"] == "pending":
            row = await decided(conn, row, "approved", by)
            facts.append(fact(row, DraftApproved, correlation_id, by))
    identity = await c.pool.fetchrow("SELECT * FROM identities WHERE id = $1", row["identity_id"])
    remaining = None if answers else await directory.remaining_today(c, identity)
    return row, outcome_of(wanted_of(row), answers or [], identity["daily_cap"], remaining)


async def reject(
    c: Context, org_id: UUID, draft_id: UUID | None, reason: str, by: UUID, correlation_id: str
) -> asyncpg.Record:
    """The draft will never be sent (repeating a rejection is harmless); Conflict once approved."""
    async with directory.change(c) as (conn, facts):
        row = await locked(conn, org_id, draft_id)
        if row["status"] in ("approved", "cancelled"):
            raise Conflict(f"draft_{row['status']}: the draft was {row['status']}; it cannot be rejected")
        if row["status"] == "pending":
            row = await decided(conn, row, "rejected", by, reason)
            facts.append(fact(row, DraftRejected, correlation_id, by, reason=reason))
    return row


async def cancel_message(c: Context, org_id: UUID, message_id: UUID, by: UUID | None, correlation_id: str) -> bool:
    """Cancel the pending draft `message_id` belongs to (its every message); True if a draft holds that
    message and it will not be sent (cancelled now or before, or rejected), False if there is no such
    draft or it was approved (its message is then a send like any)."""
    async with directory.change(c) as (conn, facts):
        row = await conn.fetchrow(
            "SELECT * FROM drafts WHERE org_id = $1 AND message_ids @> ARRAY[$2::uuid] FOR UPDATE", org_id, message_id
        )
        if not row or row["status"] == "approved":
            return False
        if row["status"] == "pending":
            row = await decided(conn, row, "cancelled", by)
            facts.append(fact(row, DraftCancelled, correlation_id, by))
    return True


async def update(
    c: Context, org_id: UUID, draft_id: UUID | None, changes: dict[str, Any], by: UUID, correlation_id: str
) -> asyncpg.Record:
    """Edit a pending draft: `changes` of subject, text, html, labels (the content) and sendAt with timezone (None:
    at once). Conflict once it is no longer pending; ValueError (ScheduleError) naming a bad field."""
    async with directory.change(c) as (conn, facts):
        row = await locked(conn, org_id, draft_id)
        if row["status"] != "pending":
            raise Conflict(f"draft_{row['status']}: only a pending draft can be edited")
        request = request_of(row)
        p = request.payload
        content = await bodies.inline(c.blobs, p.content)
        content = Content.model_validate(
            content.model_dump() | {k: changes[k] for k in ("subject", "text", "html", "labels") if k in changes}
        )
        content = await bodies.offload(c.blobs, content, c.settings.body_inline_max_bytes, [org_id])
        timing: dict[str, Any] = {}
        if "sendAt" in changes:
            at = changes["sendAt"]
            timing["send_at"] = at and fire_at(at, changes.get("timezone"), datetime.now(UTC))
        request = request.model_copy(update={"payload": p.model_copy(update={"content": content, **timing})})
        row = await conn.fetchrow(
            "UPDATE drafts SET request = $2, updated_at = now() WHERE id = $1 RETURNING *",
            row["id"], request.model_dump(mode="json"),
        )  # fmt: skip
        facts.append(fact(row, DraftUpdated, correlation_id, by, request=request.model_dump(mode="json")))
    return row
