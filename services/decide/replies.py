"""The decision for a reply: the conversation's recipient, subject, threading headers and bound mailbox. Pure.

A reply goes to the conversation's counterpart under `Re:` and the conversation's subject, unless it
names its own recipients (and then keeps its own subject, if it has one). A reply never switches mailbox: if the one the conversation is bound to cannot send, the reply is
rejected, not rerouted, so the recipient keeps seeing one consistent sender.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from schemas.envelope import Envelope
from schemas.events import (
    ReplyRequested,
    SendAccepted,
    SendAcceptedPayload,
    SendRejected,
    SendRejectedPayload,
    recipient_count,
)
from schemas.replies import reply_subject, trimmed_references
from services.decide.affinity import IdentityState, rfc_message_id


@dataclass(frozen=True)
class Thread:
    conv_id: UUID
    mailbox_id: UUID
    counterpart: str
    subject: str
    last_rfc_message_id: str | None
    refs: tuple[str, ...]


def decide_reply(
    request: ReplyRequested, state: IdentityState, thread: Thread | None, now: datetime
) -> list[Envelope]:
    p = request.payload
    used = state.used_today
    to = p.to or ([thread.counterpart] if thread else [""])
    n = recipient_count(to, p.content)

    def reject(reason, detail: str) -> list[Envelope]:
        return [
            SendRejected(
                **request.caused(occurred_at=now),
                payload=SendRejectedPayload(
                    message_id=p.message_id,
                    conv_id=p.conv_id,
                    to=to,
                    reason=reason,
                    detail=detail,
                    daily_cap=state.daily_cap,
                    remaining=max(state.daily_cap - used, 0),
                ),
            )
        ]

    if thread is None:
        return reject("mailbox_unavailable", "the conversation has no bound mailbox")
    if not state.active:
        return reject("mailbox_unavailable", "the identity was deleted")
    if suppressed := state.first_suppressed([*to, *p.content.cc, *p.content.bcc]):
        return reject("suppressed", f"{suppressed} is on the organization's suppression list")
    if used + n > state.daily_cap:
        return reject("cap_exceeded", f"daily cap of {state.daily_cap} reached")
    mailbox = next((m for m in state.mailboxes if m.id == thread.mailbox_id), None)
    if mailbox is None or not mailbox.can_take(n):
        return reject("mailbox_unavailable", "the conversation's mailbox cannot send now")
    content = p.content.model_copy(
        update={
            "subject": (p.to and p.content.subject) or reply_subject(thread.subject),
            "in_reply_to": p.answering or thread.last_rfc_message_id,
            "references": trimmed_references(thread.refs),
        }
    )
    return [
        SendAccepted(
            **request.caused(occurred_at=now),
            payload=SendAcceptedPayload(
                message_id=p.message_id,
                conv_id=thread.conv_id,
                mailbox_id=mailbox.id,
                mailbox_email=mailbox.email,
                affinity="existing",
                rfc_message_id=rfc_message_id(p.message_id, mailbox.email),
                from_addr=mailbox.email,
                to=to,
                content=content,
                daily_cap=state.daily_cap,
                remaining=state.daily_cap - used - n,
            ),
        )
    ]
