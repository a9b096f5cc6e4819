"""A message's status: one type for the views, the webhooks and every dialect (each dialect shows it
in its own seed's set, mapped in its schema module; a test checks every map covers every status)."""

from __future__ import annotations

from typing import Literal, get_args

MessageStatus = Literal[
    "pending_approval", "scheduled", "queued", "received", "sent", "delivered", "failed", "rejected", "cancelled",
    "bounced", "complained",
]
MESSAGE_STATUSES: tuple[MessageStatus, ...] = get_args(MessageStatus)

# A mailbox's health: affinity chooses only a healthy one; the database checks the column (001_init).
MailboxHealth = Literal["healthy", "unhealthy", "paused"]

# Statuses only move forward, whatever order their events arrive in (projections/messages.py): a
# status replaces another of a lower rank. Ranks are tens apart so that a status can come between two
# (migration 033 multiplied the stored ones by ten). The database checks the column holds one of these
# (migrations 032, 033 and 036).
STATUS_RANK: dict[MessageStatus, int] = {
    "pending_approval": 5,  # held in a draft until a person approves it (SPEC 3.5)
    "received": 10,
    "queued": 10,
    "scheduled": 15,  # waiting for its time (SPEC 3.5): the request's `queued` row moves on to it
    "sent": 20,
    "delivered": 30,
    "failed": 40,
    "rejected": 40,
    "cancelled": 40,  # cancelled before its time: it never goes out
    "bounced": 50,
    "complained": 60,
}
