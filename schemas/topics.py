"""Every topic: its name, what keys it, how many partitions, and which events travel on it.

Keys give order where order matters: requests by identity (one partition owner decides all of an
identity's sends, so caps and affinity need no locks), accepted sends by mailbox (one connection pool
and rate window per mailbox), message lifecycle events by message, a mailbox's sync facts by mailbox (its partition names the sync
worker that reads its mail back).
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas import events as ev


@dataclass(frozen=True)
class Topic:
    suffix: str
    key: str
    events: tuple[type[ev.Envelope], ...]
    partitions: int | None = None  # None: the configured default (SENDSTREAM_KAFKA_PARTITIONS)

    def name(self, prefix: str) -> str:
        return f"{prefix}.{self.suffix}"

    def dlq(self, prefix: str) -> str:
        """Where events that cannot be processed are parked, with the failure in their headers."""
        return f"{prefix}.{self.suffix}.dlq"


REQUESTS = Topic(
    "requests", "identity_id", (ev.SendRequested, ev.ReplyRequested, ev.MessageArrived, ev.CancelRequested)
)
DECISIONS = Topic(
    "decisions",
    "mailbox_id when assigned, else identity_id",
    (ev.SendAccepted, ev.SendRejected, ev.DispatchRetryDue, ev.SendScheduled, ev.SendCancelled),
)
MESSAGES = Topic(
    "messages",
    "message_id",
    (
        ev.MessageSent, ev.DispatchDeferred, ev.MessageFailed, ev.MessageReceived, ev.MessageDelivered,
        ev.MessageBounced, ev.MessageComplained, ev.MessageFlagsChanged, ev.MessageDeleted,
    ),
)  # fmt: skip
SUPPRESSIONS = Topic("suppressions", "org_id", (ev.SuppressionAdded, ev.SuppressionRemoved))
WEBHOOKS = Topic(
    "webhooks", "endpoint_id", (ev.WebhookDelivered, ev.WebhookFailed, ev.WebhookEndpointDisabled)
)
ADMIN = Topic(
    "admin",
    "org_id",
    (
        ev.IdentityCreated, ev.IdentityUpdated, ev.IdentityDeleted, ev.MailboxAdded, ev.MailboxUpdated,
        ev.MailboxHealthChanged, ev.MailboxRemoved, ev.DraftCreated, ev.DraftUpdated, ev.DraftApproved,
        ev.DraftRejected, ev.DraftCancelled,
    ),
)  # fmt: skip

# Which sync worker owns a mailbox's IMAP session: the one its consumer group assigns the partition the
# mailbox's key maps to (services/mailsync).
MAILSYNC = Topic("mailsync", "mailbox_id", (ev.MailboxSyncChanged,))

ALL_TOPICS: tuple[Topic, ...] = (REQUESTS, DECISIONS, MESSAGES, SUPPRESSIONS, WEBHOOKS, ADMIN, MAILSYNC)

_TOPIC_OF = {event: topic for topic in ALL_TOPICS for event in topic.events}


def topic_of(event: ev.Envelope) -> Topic:
    return _TOPIC_OF[type(event)]


def key_of(event: ev.Envelope) -> bytes:
    """The partition key of an event, per its topic's rule above."""
    p = event.payload
    topic = topic_of(event)
    if topic is REQUESTS:
        value = event.identity_id
    elif topic is DECISIONS:
        value = getattr(p, "mailbox_id", None) or event.identity_id
    elif topic is MESSAGES:
        value = p.message_id
    elif topic is WEBHOOKS:
        value = p.endpoint_id
    elif topic is MAILSYNC:
        value = p.mailbox_id
    else:
        value = event.org_id
    return str(value).encode()
