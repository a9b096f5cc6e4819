"""Which events become webhooks, under which names, and the body each one carries. Pure.

Body: `{"type", "timestamp", "data"}`, where `data` is the message as the dialect it was sent through
shows it: the identities dialect's (`messageId`, `id` = RFC Message-ID, `convId`, `identity`, `account`,
`status`, …), or the inboxes or mailboxes dialect's message object. What the event
carries wins; what it lacks comes from the messages view (`stored`), when that has the message.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from schemas import ids
from schemas.api.common import iso
from schemas.api.inboxes import message_out, partial_row
from schemas.api.mailboxes import message_item
from schemas.envelope import Envelope
from schemas.events import (
    MessageBounced,
    MessageComplained,
    MessageDelivered,
    MessageFailed,
    MessageReceived,
    MessageSent,
    RecipientStatus,
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
}
# Other names an endpoint may subscribe by; it then receives the event under that name.
ALIASES = {"email.sent": "message.sent"}
TEST_TYPE = "webhook.test"
EVENT_NAMES: tuple[str, ...] = (
    *(name for name, _ in WEBHOOK_TYPES.values()),
    "message.forwarded",  # a forward's MessageSent (mailboxes dialect)
    *ALIASES,
)


def webhook_type(event: Envelope) -> str | None:
    if isinstance(event, MessageSent) and event.payload.summary and event.payload.summary.forwarded:
        return "message.forwarded"  # a forward's outcome, not message.sent (mailboxes dialect)
    known = WEBHOOK_TYPES.get(type(event))
    return known[0] if known else None


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


# What the identities dialect's data takes from the messages view.
_IDENTITIES_COLUMNS = frozenset(
    {"identity_id", "conv_id", "direction", "mailbox_id", "mailbox_email", "from_addr", "to_addrs", "subject",
     "rfc_message_id"}
)  # fmt: skip


def carries_message(event: Envelope) -> bool:
    """Whether the event itself carries everything `message_data` shows (no lookup needed): the outcome
    of an identities send does; the inboxes dialect shows the whole message (bodies, labels, files)."""
    return (
        isinstance(event, MessageSent | MessageFailed)
        and event.payload.summary is not None
        and event.payload.summary.dialect == "identities"
    )


def _dialect_data(event: Envelope, m: dict[str, Any], dialect: str) -> dict[str, Any]:
    """The inboxes or mailboxes dialect's message object, from what is known of the message (the view
    may not have it yet: then what the event carries, the rest empty)."""
    row = partial_row(**{
        "org_id": event.org_id, "identity_id": event.identity_id, "created_at": event.occurred_at,
        "updated_at": event.occurred_at, **m,
    })  # fmt: skip
    if dialect == "mailboxes":
        return message_item(row).model_dump(mode="json")
    return message_out(row).model_dump(mode="json", by_alias=True)


def message_data(event: Envelope, stored: dict[str, Any] | None, handles: dict[Any, str]) -> dict[str, Any]:
    """The `data` of a message webhook: the message as the dialect it was sent through shows it."""
    known = _known(event)
    dialect = (stored or {}).get("dialect", known.get("dialect"))
    if dialect in ("inboxes", "mailboxes"):
        return _dialect_data(event, {**(stored or {}), **known}, dialect)
    m = {**{k: v for k, v in (stored or {}).items() if k in _IDENTITIES_COLUMNS}, **known}
    mailbox, email = m.get("mailbox_id"), m.get("mailbox_email")
    data: dict[str, Any] = {
        "messageId": ids.render("message", m["id"]),
        "id": m.get("rfc_message_id"),
        "convId": ids.render("conversation", m["conv_id"]) if m.get("conv_id") else None,
        "identity": handles.get(m.get("identity_id")),
        "direction": m.get("direction", "outbound"),
        "status": m["status"],
        "from": m.get("from_addr"),
        "to": m.get("to_addrs", []),
        "subject": m.get("subject"),
        "account": {"id": ids.render("mailbox", mailbox), "email": email} if mailbox and email else None,
    }
    for extra in ("reason", "smtp", "recipient", "statusCode", "diagnostic"):
        if extra in m:
            data[extra] = m[extra]
    return data


def body(webhook: str, occurred_at: datetime, data: dict[str, Any]) -> str:
    """The exact JSON text sent (and signed) on every attempt."""
    return json.dumps(
        {"type": webhook, "timestamp": iso(occurred_at), "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
    )
