"""Opaque page cursors, for every list that pages by keyset: the keyset of the last item a page showed
(its time and id, or a sequence number), encoded so that clients pass it back without reading into it.
(The event feed's cursors are not opaque: they are the log's sequence numbers, as Last-Event-ID.)"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from uuid import UUID

from services.ingress.http import ApiError

Part = datetime | UUID | str | int


def encode(*keyset: Part) -> str:
    text = "|".join(v.isoformat() if isinstance(v, datetime) else str(v) for v in keyset)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode(cursor: str, *kinds: type, name: str = "cursor") -> tuple:
    """The keyset `encode` made, its parts of `kinds` (datetime, UUID, int or str: the last str may
    hold anything); 400 naming `name` for anything else."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        parts = text.split("|", len(kinds) - 1)
        if len(parts) != len(kinds):
            raise ValueError(cursor)
        return tuple(_part(kind, part) for kind, part in zip(kinds, parts, strict=True))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_request", f"{name}: is not a cursor this API returned") from None


def _part(kind: type, text: str) -> Part:
    if kind is datetime:
        at = datetime.fromisoformat(text)
        if at.tzinfo is None:  # every cursor this API makes has its offset
            raise ValueError(text)
        return at
    if kind is UUID:
        return UUID(text)
    if kind is int:
        value = int(text)
        if not 0 <= value < 2**63:
            raise ValueError(text)
        return value
    return text
