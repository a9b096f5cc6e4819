"""The decision for a send: cap, mailbox pick (sticky recipient affinity), accept or reject. Pure.

`decide_send` takes the request and a snapshot of the identity's state and returns the events to
publish; `apply` (in app.py) derives the state changes from those same events.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from uuid import UUID

from schemas.envelope import Envelope
from schemas.events import (
    Affinity,
    RejectReason,
    RequestedMessage,
    SendAccepted,
    SendAcceptedPayload,
    SendRejected,
    SendRejectedPayload,
    SendRequested,
    recipient_count,
)
from schemas.status import MailboxHealth

_EPOCH = datetime.min


@dataclass(frozen=True)
class MailboxState:
    id: UUID
    email: str
    health: MailboxHealth
    hourly_limit: int
    daily_limit: int | None
    sent_last_hour: int = 0
    sent_today: int = 0
    last_used_at: datetime | None = None

    @property
    def capacity_left_today(self) -> int:
        """What it may still send today: its daily limit, or 24 rolling hours' worth when it has none."""
        limit = self.daily_limit if self.daily_limit is not None else self.hourly_limit * 24
        return limit - self.sent_today

    def can_take(self, recipients: int = 1) -> bool:
        """Healthy, with room for a message to this many recipients in its rolling hour and its day."""
        return (
            self.health == "healthy"
            and self.sent_last_hour + recipients <= self.hourly_limit
            and (self.daily_limit is None or self.sent_today + recipients <= self.daily_limit)
        )

    def used(self, now: datetime, recipients: int = 1) -> MailboxState:
        return replace(
            self,
            sent_last_hour=self.sent_last_hour + recipients,
            sent_today=self.sent_today + recipients,
            last_used_at=now,
        )


@dataclass(frozen=True)
class IdentityState:
    identity_id: UUID
    handle: str
    daily_cap: int
    used_today: int
    mailboxes: tuple[MailboxState, ...]
    affinity: dict[str, UUID] = field(default_factory=dict)  # lower-cased recipient -> mailbox id
    active: bool = True
    timezone: str = "UTC"
    suppressed: frozenset[str] = (
        frozenset()
    )  # lower-cased addresses of this request's that must not be mailed

    def first_suppressed(self, addresses: list[str]) -> str | None:
        return next((a for a in addresses if a.lower() in self.suppressed), None)


def rfc_message_id(message_id: UUID, mailbox_email: str) -> str:
    """The RFC 5322 Message-ID: unique left part, the sending mailbox's domain on the right."""
    return f"<{message_id}@{mailbox_email.rpartition('@')[2]}>"


def pick_mailbox(mailboxes: tuple[MailboxState, ...], recipients: int = 1) -> MailboxState | None:
    """A healthy mailbox with room: the most capacity left today, ties to the least recently used."""
    usable = [m for m in mailboxes if m.can_take(recipients)]
    if not usable:
        return None
    return min(
        usable,
        key=lambda m: (-m.capacity_left_today, (m.last_used_at or _EPOCH).replace(tzinfo=None), m.id),
    )


def advance(state: IdentityState, decisions: list[Envelope]) -> IdentityState:
    """The identity's state after these decisions: cap used, each mailbox's usage, new pins."""
    mailboxes = {m.id: m for m in state.mailboxes}
    affinity = dict(state.affinity)
    used = state.used_today
    for d in decisions:
        if not isinstance(d, SendAccepted):
            continue
        p = d.payload
        n = recipient_count(p.to, p.content)
        used += n
        if p.mailbox_id in mailboxes:
            mailboxes[p.mailbox_id] = mailboxes[p.mailbox_id].used(d.occurred_at, n)
        if p.affinity != "existing":
            affinity[p.to[0].lower()] = p.mailbox_id
    return replace(state, used_today=used, mailboxes=tuple(mailboxes.values()), affinity=affinity)


def decide_send(request: SendRequested, state: IdentityState, now: datetime) -> list[Envelope]:
    """One SendAccepted or SendRejected per message, in request order, each seeing the ones before it."""
    out: list[Envelope] = []
    for m in request.payload.messages:
        decision = _decide_message(request, m, state, now)
        state = advance(state, [decision])
        out.append(decision)
    return out


def _decide_message(
    request: SendRequested, m: RequestedMessage, state: IdentityState, now: datetime
) -> Envelope:
    """A message counts every recipient against the identity's cap and its mailbox's limits; its
    counterpart (first `To`) keys the affinity."""
    n = recipient_count(m.to, request.payload.content)

    def reject(reason: RejectReason, detail: str) -> SendRejected:
        return SendRejected(
            **request.caused(occurred_at=now),
            payload=SendRejectedPayload(
                message_id=m.message_id, conv_id=m.conv_id, to=m.to, reason=reason, detail=detail,
                daily_cap=state.daily_cap, remaining=max(state.daily_cap - state.used_today, 0),
            ),
        )  # fmt: skip

    if not state.active:
        return reject("mailbox_unavailable", "the identity was deleted")
    c = request.payload.content
    if suppressed := state.first_suppressed([*m.to, *c.cc, *c.bcc]):
        return reject("suppressed", f"{suppressed} is on the organization's suppression list")
    if state.used_today + n > state.daily_cap:
        return reject("cap_exceeded", f"daily cap of {state.daily_cap} reached")
    recipient = m.counterpart.lower()
    mailboxes = {mb.id: mb for mb in state.mailboxes}
    pinned = mailboxes.get(state.affinity[recipient]) if recipient in state.affinity else None
    how: Affinity
    if pinned is not None and pinned.can_take(n):
        chosen, how = pinned, "existing"
    else:
        chosen = pick_mailbox(state.mailboxes, n)
        how = "new" if recipient not in state.affinity else "reassigned"
    if chosen is None:
        return reject("mailbox_unavailable", "no healthy mailbox with capacity left")
    return SendAccepted(
        **request.caused(occurred_at=now),
        payload=SendAcceptedPayload(
            message_id=m.message_id, conv_id=m.conv_id, mailbox_id=chosen.id, mailbox_email=chosen.email,
            affinity=how, rfc_message_id=rfc_message_id(m.message_id, chosen.email), from_addr=chosen.email,
            to=m.to, content=request.payload.content, daily_cap=state.daily_cap,
            remaining=state.daily_cap - state.used_today - n,
        ),
    )  # fmt: skip
