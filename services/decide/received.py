"""The decision for mail that arrived for an identity: the conversation it joins and the mailbox that
conversation is bound to. Pure.

A reply to one of ours (or to mail received) joins that conversation and keeps its mailbox, so the agent's next reply goes
out from the address the correspondent wrote to, with `In-Reply-To` pointing at their message. Mail
that replies to nothing of ours starts a conversation, bound to the mailbox it was addressed to, or
(addressed to the identity's handle) to the mailbox the sender is pinned to, or the pool's first
healthy one. Decide is the one writer of conversation bindings, and sees an identity's arrivals in
order with its sends (both are keyed by identity).
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from mail.parse import answers
from schemas.envelope import Envelope
from schemas.events import MessageArrived, MessageReceived, MessageReceivedPayload
from services.decide.affinity import IdentityState
from services.decide.replies import Thread


def answers_of(event: MessageArrived) -> list[str]:
    """The Message-IDs an arrival may reply to, the likeliest first (as the intake looked them up)."""
    c = event.payload.message.content
    return answers(c.in_reply_to, c.references)


def rethreaded(event: MessageArrived, conv_id: UUID | None) -> MessageArrived:
    """The arrival in the conversation decide found for it. The intake looked for one in the threads as
    they were when the mail came in; decide, seeing an identity's arrivals in order, knows the ones just
    before it too (a reply to mail that arrived a moment earlier)."""
    if conv_id is None or conv_id == event.payload.conv_id:
        return event
    return event.model_copy(update={"payload": event.payload.model_copy(update={"conv_id": conv_id})})


def receive(
    event: MessageArrived, state: IdentityState, thread: Thread | None, now: datetime
) -> list[Envelope]:
    p, m = event.payload, event.payload.message
    if thread is not None:
        mailbox_id = thread.mailbox_id
    else:
        by_id = {mb.id: mb for mb in state.mailboxes}
        pinned = state.affinity.get(m.from_addr.lower())
        healthy = next((mb.id for mb in state.mailboxes if mb.health == "healthy"), None)
        mailbox_id = next((i for i in (p.mailbox_id, pinned, healthy) if i in by_id), None)
    email = next((mb.email for mb in state.mailboxes if mb.id == mailbox_id), None)
    return [
        MessageReceived(
            **event.caused(occurred_at=now),
            payload=MessageReceivedPayload(
                message_id=m.message_id, conv_id=p.conv_id, mailbox_id=mailbox_id, mailbox_email=email,
                new_conversation=thread is None, message=m,
            ),
        )
    ]  # fmt: skip


def thread_after_received(thread: Thread | None, decisions: list[Envelope]) -> Thread | None:
    """A conversation's threading state after a message arrived in it: the next reply answers it."""
    for d in decisions:
        if isinstance(d, MessageReceived) and d.payload.mailbox_id is not None:
            m = d.payload.message
            refs = thread.refs if thread is not None else tuple(m.content.references)
            thread = Thread(
                d.payload.conv_id,
                d.payload.mailbox_id,
                thread.counterpart if thread is not None else m.from_addr,
                thread.subject if thread is not None else m.content.subject,
                m.rfc_message_id,
                (*refs, m.rfc_message_id),
            )
    return thread
