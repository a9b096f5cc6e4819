"""Identifiers: UUIDv7 inside, rendered per dialect (prefixed strings or bare UUIDs), parsed from both."""

from __future__ import annotations

import uuid

import uuid6

PREFIXES = {
    "org": "org",
    "key": "key",
    "identity": "idn",
    "mailbox": "acc",
    "conversation": "conv",
    "message": "msg",
    "webhook": "whk",
    "delivery": "whd",
}


def new_id() -> uuid.UUID:
    """A fresh time-ordered UUIDv7."""
    return uuid.UUID(bytes=uuid6.uuid7().bytes)


def render(kind: str, value: uuid.UUID) -> str:
    """`conv_0190…` style id for the identities and inboxes dialects."""
    return f"{PREFIXES[kind]}_{value.hex}"


def parse(kind: str, text: str) -> uuid.UUID | None:
    """Accept `conv_<32 hex>`, a bare UUID in any standard form, or return None if it is neither."""
    prefix = PREFIXES[kind] + "_"
    if text.startswith(prefix):
        text = text[len(prefix) :]
    try:
        return uuid.UUID(text)
    except ValueError:
        return None
