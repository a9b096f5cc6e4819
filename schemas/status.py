"""A message's status: one type for the views, the webhooks and every dialect (each dialect shows it
in its own seed's set, mapped in its schema module; a test checks every map covers every status)."""

from __future__ import annotations

from typing import Literal, get_args

MessageStatus = Literal["queued", "received", "sent", "delivered", "failed", "rejected", "bounced", "complained"]
MESSAGE_STATUSES: tuple[MessageStatus, ...] = get_args(MessageStatus)

# A mailbox's health: affinity chooses only a healthy one; the database checks the column (001_init).
MailboxHealth = Literal["healthy", "unhealthy", "paused"]

# Statuses only move forward, whatever order their events arrive in (projections/messages.py): a
# status replaces another of a lower rank. The database checks the column holds one of these
# (migration 032).
STATUS_RANK: dict[MessageStatus, int] = {
    "received": 1,
    "queued": 1,
    "sent": 2,
    "delivered": 3,
    "failed": 4,
    "rejected": 4,
    "bounced": 5,
    "complained": 6,
}
