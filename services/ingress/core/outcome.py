"""A send command's outcome (schemas/commands.py) from decide's answers. Pure."""

from __future__ import annotations

from schemas.commands import MessageOutcome, Outcome
from schemas.events import RequestedMessage
from services.common.domain.decided import Answer


def outcome_of(
    wanted: list[RequestedMessage], answers: list[Answer], daily_cap: int, remaining: int | None
) -> Outcome:
    """The outcome of a request for `wanted` from decide's `answers`. Usage comes from the decision that
    saw the most of the day used (the last one decided); with no answers at all, from `daily_cap` and
    `remaining` as read by the caller."""
    by_message = {a.message_id: a for a in answers}
    messages = []
    for m in wanted:
        a = by_message.get(m.message_id)
        if a is None:  # not decided in time; it will still be, exactly once
            messages.append(MessageOutcome(m.message_id, m.conv_id, m.to, "queued"))
        elif a.type == "SendAccepted":
            messages.append(
                MessageOutcome(
                    m.message_id, a.conv_id or m.conv_id, m.to, "accepted", None, a.rfc_message_id,
                    a.affinity, a.mailbox_id, a.mailbox_email,
                )
            )  # fmt: skip
        elif a.type == "SendScheduled":
            reason = a.reason if a.reason == "cap_deferred" else None
            messages.append(MessageOutcome(m.message_id, m.conv_id, m.to, "scheduled", reason, send_at=a.send_at))
        else:
            messages.append(MessageOutcome(m.message_id, m.conv_id, m.to, "rejected", a.reason))
    last = max(by_message.values(), key=lambda a: a.daily_cap - a.remaining, default=None)
    if last is not None:
        daily_cap, remaining = last.daily_cap, last.remaining
    return Outcome(messages, daily_cap, remaining if remaining is not None else daily_cap)
