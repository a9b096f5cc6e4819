"""What every dialect's send request becomes: dialect-neutral commands, carried out by the ingress core
(services/ingress/core/send.py). A dialect resolves its own ids (a conversation, a message it replies
to) before it builds one, so the core and decide never see wire ids."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from uuid import UUID

from schemas.events import Affinity, Content, OnCapExceeded, Payload, RejectReason, StopOnReply


class Timed(Payload):
    """When the command's messages go out (SPEC 3.5): `send_at`, the UTC instant it fires at (None: now);
    `unless_replied`: cancelled if mail arrives in the conversation first."""

    send_at: datetime | None = None
    unless_replied: StopOnReply | None = None
    on_cap_exceeded: OnCapExceeded = "reject"
    draft: bool = False  # held for a person's approval (as every send of an identity with requireApproval)


class NewSend(Timed):
    """New conversations from an identity: each entry of `messages` (its `To` addresses) one message in a
    conversation of its own. The identities dialect sends one message per address; the inboxes dialect
    one message to all of them, with the `content`'s Cc and Bcc."""

    identity_id: UUID
    messages: list[list[str]]
    content: Content


class Reply(Timed):
    """A reply in a conversation, from the mailbox it is bound to (decide resolves `In-Reply-To` and
    `References`): to its counterpart under `Re:` and the conversation's subject, or to `recipients`
    (and the content's Cc and Bcc) under the content's subject."""

    identity_id: UUID
    conv_id: UUID
    to: str  # the conversation's counterpart
    content: Content
    recipients: list[str] | None = None
    answering: str | None = None  # the Message-ID it answers (None: the conversation's latest message)


Command = NewSend | Reply


# --- what became of a command: every dialect renders its answer from this -------------------------


@dataclass(frozen=True)
class MessageOutcome:
    message_id: UUID
    conv_id: UUID
    to: list[str]
    # queued: its decision did not come back in time; scheduled: it waits for `send_at`; pending_approval:
    # held in a draft (`draft_id`) until a person approves it
    state: Literal["accepted", "rejected", "queued", "scheduled", "pending_approval"]
    reason: RejectReason | Literal["cap_deferred"] | None = None  # a rejection's, or a deferral's
    rfc_message_id: str | None = None
    affinity: Affinity | None = None
    mailbox_id: UUID | None = None
    mailbox_email: str | None = None
    send_at: datetime | None = None
    draft_id: UUID | None = None


@dataclass(frozen=True)
class Outcome:
    messages: list[MessageOutcome]
    daily_cap: int
    remaining: int  # what is left of the daily cap after this request

    @property
    def rejected(self) -> int:
        return sum(m.state == "rejected" for m in self.messages)

    @property
    def scheduled(self) -> int:
        return sum(m.state == "scheduled" for m in self.messages)

    @property
    def pending(self) -> int:
        """Held in a draft for approval."""
        return sum(m.state == "pending_approval" for m in self.messages)
