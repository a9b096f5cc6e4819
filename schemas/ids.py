"""Identifiers: UUIDv7 inside, rendered per dialect (prefixed strings or bare UUIDs), parsed from both."""

from __future__ import annotations

import uuid

import uuid6

PREFIXES = {
    "org": "org",
    "key": "key",
    "identity": "idn",
    "inbox": "inbox",  # the inboxes dialect's name for an identity (SPEC 2)
    "mailbox": "acc",
    "conversation": "conv",
    "thread": "thread",  # the inboxes dialect's name for a conversation
    "message": "msg",
    "webhook": "whk",
    "delivery": "whd",
    "draft": "drf",
}
# Kinds that name the same entity: an id rendered by one dialect is accepted by the others.
SAME = {
    "identity": ("inbox",),
    "inbox": ("identity",),
    "conversation": ("thread",),
    "thread": ("conversation",),
}


def new_id() -> uuid.UUID:
    """A fresh time-ordered UUIDv7."""
    return uuid.UUID(bytes=uuid6.uuid7().bytes)


def render(kind: str, value: uuid.UUID) -> str:
    """`conv_0190…` style id for the identities and inboxes dialects."""
    return f"{PREFIXES[kind]}_{value.hex}"


def parse(kind: str, text: str) -> uuid.UUID | None:
    """Accept `conv_<32 hex>` (or the prefix any dialect gives the same entity: `thread_…`), a bare
    UUID in any standard form, or return None if it is neither."""
    for other in (kind, *SAME.get(kind, ())):
        prefix = PREFIXES[other] + "_"
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    try:
        return uuid.UUID(text)
    except ValueError:
        return None
