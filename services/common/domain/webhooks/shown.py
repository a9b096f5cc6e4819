"""Events as a dialect with webhooks of its own shows them (schemas/dialect.py: WebhookFormat): for the
endpoints made through its routes (the webhooks service's fan-out) and for its live stream (the AgentMail
dialect's WebSocket, which takes events one by one from the archive)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from schemas import dialects
from schemas.envelope import Envelope
from schemas.webhooks import dialect_body, webhook_type
from services.common.domain import views


async def own_body(
    conn: asyncpg.Connection | asyncpg.Pool, dialect: str, name: str, event: Envelope, stored: dict | None,
    handles: dict[Any, str],
) -> str | None:
    """The body of webhook `name` of `event` as `dialect` shows it (its conversation read for the webhooks
    that show one); None if that dialect has no such webhook, or no webhooks of its own."""
    fmt = dialects.of(dialect).webhook_format
    if fmt is None:
        return None
    thread = None
    conv_id = (stored or {}).get("conv_id") or getattr(event.payload, "conv_id", None)
    if name in fmt.with_thread and conv_id:
        thread = await views.conversation(conn, event.org_id, conv_id, wait_s=0)  # type: ignore[arg-type]
    return dialect_body(fmt, name, event, stored, handles, thread)


async def shown_alone(pool: asyncpg.Pool, dialect: str, event: Envelope) -> str | None:
    """One event as `dialect` shows it, reading what it needs: its message's row (waited for briefly: the
    views are written by another consumer) and its identity's handle."""
    fmt = dialects.of(dialect).webhook_format
    name = fmt.name_of(webhook_type(event)) if fmt else None
    if name is None:
        return None
    message_id: UUID | None = getattr(event.payload, "message_id", None)
    stored = (await views.messages_filled(pool, [message_id])).get(message_id) if message_id else None
    handles = {}
    if event.identity_id is not None:
        handle = await pool.fetchval("SELECT handle FROM identities WHERE id = $1", event.identity_id)
        handles = {event.identity_id: handle} if handle else {}
    return await own_body(pool, dialect, name, event, stored, handles)
