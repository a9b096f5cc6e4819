"""Which events become webhooks, under which names, and the body each one carries. Pure.

Body: `{"type", "timestamp", "data"}`, where `data` is the message as the dialect it was sent through
shows it (each dialect's `webhook_message`, schemas/dialects.py). What the event carries wins; what it
lacks comes from the messages view (`stored`), when that has the message.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from schemas import dialects, ids
from schemas.api.common import iso
from schemas.dialect import WebhookFormat
from schemas.envelope import Envelope
from schemas.events import (
    DraftApproved,
    DraftCreated,
    DraftRejected,
    MessageBounced,
    MessageComplained,
    MessageDelivered,
    MessageFailed,
    MessageReceived,
    MessageSent,
    RecipientStatus,
    SendCancelled,
    SendRejected,
)
from schemas.status import MessageStatus

# event type -> (webhook type, the message status it reports)
WEBHOOK_TYPES: dict[type[Envelope], tuple[str, MessageStatus]] = {
    MessageSent: ("message.sent", "sent"),
    MessageFailed: ("message.failed", "failed"),
    SendRejected: ("message.rejected", "rejected"),
    MessageReceived: ("message.received", "received"),
    MessageDelivered: ("message.delivered", "delivered"),
    MessageBounced: ("message.bounced", "bounced"),
    MessageComplained: ("message.complained", "complained"),
    SendCancelled: ("message.cancelled", "cancelled"),  # a scheduled send, cancelled or stopped by a reply
}
# Drafts a person approves (SPEC 3.5): `data` is the draft (`draft_data`), not a message.
DRAFT_TYPES: dict[type[Envelope], str] = {
    DraftCreated: "draft.created",
    DraftApproved: "draft.approved",
    DraftRejected: "draft.rejected",
}
# Other names an endpoint may subscribe by; it then receives the event under that name.
ALIASES = {"email.sent": "message.sent"}
TEST_TYPE = "webhook.test"
EVENT_NAMES: tuple[str, ...] = (
    *(name for name, _ in WEBHOOK_TYPES.values()),
    "message.forwarded",  # a forward's MessageSent
    *DRAFT_TYPES.values(),
    *ALIASES,
)


def webhook_type(event: Envelope) -> str | None:
    if isinstance(event, MessageSent) and event.payload.summary and event.payload.summary.forwarded:
        return "message.forwarded"  # a forward's outcome, not message.sent
    known = WEBHOOK_TYPES.get(type(event))
    return known[0] if known else DRAFT_TYPES.get(type(event))


def subscribed_name(subscribed: list[str], webhook: str) -> str | None:
    """The name to send `webhook` under to an endpoint subscribed to `subscribed`, or None if it is not."""
    if webhook in subscribed:
        return webhook
    return next((alias for alias in subscribed if ALIASES.get(alias) == webhook), None)


def _known(event: Envelope) -> dict[str, Any]:
    """The message facts the event itself carries, in the messages view's column names."""
    p = event.payload
    facts: dict[str, Any] = {"id": p.message_id, "status": WEBHOOK_TYPES[type(event)][1]}
    if event.identity_id:
        facts["identity_id"] = event.identity_id
    match event:
        case MessageSent() | MessageFailed():
            facts["mailbox_id"] = p.mailbox_id
            if p.summary:
                s = p.summary
                facts |= {
                    "conv_id": s.conv_id, "from_addr": s.from_addr, "to_addrs": s.to, "subject": s.subject,
                    "mailbox_email": s.mailbox_email, "dialect": s.dialect,
                }  # fmt: skip
            if p.reply:
                facts["smtp"] = {"code": p.reply.code, "message": p.reply.message}
            if isinstance(event, MessageSent):
                facts["rfc_message_id"] = p.rfc_message_id
            else:
                facts["reason"] = p.reason
        case SendRejected():
            facts |= {"conv_id": p.conv_id, "to_addrs": p.to, "reason": p.reason}
        case SendCancelled():
            facts |= {"conv_id": p.conv_id, "reason": p.reason}
        case MessageReceived():
            m = p.message
            facts |= {
                "direction": "inbound", "conv_id": p.conv_id, "mailbox_id": p.mailbox_id,
                "mailbox_email": p.mailbox_email, "rfc_message_id": m.rfc_message_id, "from_addr": m.from_addr,
                "to_addrs": m.to, "cc_addrs": m.content.cc, "subject": m.content.subject,
                "text_body": m.content.text, "html_body": m.content.html, "dialect": m.content.dialect,
                "attachments": [a.model_dump(mode="json") for a in m.content.attachments],
            }  # fmt: skip
    if isinstance(p, RecipientStatus):
        facts |= {"recipient": p.recipient, "statusCode": p.status, "diagnostic": p.diagnostic}
    return {k: v for k, v in facts.items() if v is not None}


def carries_message(event: Envelope) -> bool:
    """Whether the event itself carries everything `message_data` shows (no lookup needed)."""
    return type(event) in DRAFT_TYPES or (
        isinstance(event, MessageSent | MessageFailed)
        and event.payload.summary is not None
        and dialects.of(event.payload.summary.dialect).outcome_shows_message
    )


def message_data(event: Envelope, stored: dict[str, Any] | None, handles: dict[Any, str]) -> dict[str, Any]:
    """The `data` of a message webhook: the message as the dialect it was sent through shows it (a
    draft's: the draft)."""
    if type(event) in DRAFT_TYPES:
        return draft_data(event, handles)
    known, stored = _known(event), stored or {}
    dialect = dialects.of(stored.get("dialect", known.get("dialect")))
    return dialect.webhook_message(event, stored, known, handles)


def draft_data(event: Envelope, handles: dict[Any, str]) -> dict[str, Any]:
    """A draft webhook's `data`: the draft's id, status and messages (and, when made, what it sends)."""
    p = event.payload
    data: dict[str, Any] = {
        "id": ids.render("draft", p.draft_id), "identity": handles.get(event.identity_id), "status": p.status,
        "messageIds": [ids.render("message", m) for m in p.message_ids], "reason": p.reason,
    }  # fmt: skip
    if p.request is not None:
        request = p.request["payload"]
        data["to"] = [a for m in request.get("messages") or [] for a in m["to"]] or request.get("to") or []
        data["subject"] = request["content"].get("subject", "")
        data["sendAt"] = request.get("send_at")
    return data


def dialect_body(
    fmt: WebhookFormat, webhook: str, event: Envelope, stored: dict[str, Any] | None, handles: dict[Any, str],
    thread: Any = None,
) -> str | None:
    """The exact JSON text for an endpoint made through a dialect with webhooks of its own (`fmt`), or
    None when that dialect has no such webhook (`thread`: the message's conversation and its messages,
    read when `fmt.with_thread` names the webhook)."""
    if type(event) in DRAFT_TYPES:
        return None
    shown = fmt.body(webhook, event, {**(stored or {}), **_known(event)}, handles, thread)
    return None if shown is None else json.dumps(shown, separators=(",", ":"), ensure_ascii=False)


def body(webhook: str, occurred_at: datetime, data: dict[str, Any]) -> str:
    """The exact JSON text sent (and signed) on every attempt."""
    return json.dumps(
        {"type": webhook, "timestamp": iso(occurred_at), "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
    )
