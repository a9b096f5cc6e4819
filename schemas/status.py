"""A message's status: one type for the views, the webhooks and every dialect (each dialect shows it
in its own seed's set, mapped in its schema module; a test checks every map covers every status)."""

from __future__ import annotations

from typing import Literal, get_args

MessageStatus = Literal[
    "scheduled", "queued", "received", "sent", "delivered", "failed", "rejected", "cancelled", "bounced", "complained"
]
MESSAGE_STATUSES: tuple[MessageStatus, ...] = get_args(MessageStatus)

# A mailbox's health: affinity chooses only a healthy one; the database checks the column (001_init).
MailboxHealth = Literal["healthy", "unhealthy", "paused"]

# Statuses only move forward, whatever order their events arrive in (projections/messages.py): a
# status replaces another of a lower rank. The database checks the column holds one of these
# (migrations 032 and 033).
STATUS_RANK: dict[MessageStatus, int] = {
    "scheduled": 0,  # waiting for its time (SPEC 3.5); decided then, as any send
    "received": 1,
    "queued": 1,
    "sent": 2,
    "delivered": 3,
    "failed": 4,
    "rejected": 4,
    "cancelled": 4,  # cancelled before its time: it never goes out
    "bounced": 5,
    "complained": 6,
}
