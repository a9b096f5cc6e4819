"""One-click unsubscribe (RFC 8058): the token a send's `List-Unsubscribe` carries, and reading it back.

A token names the message and the recipient it was sent to: the message's id, the first 8 bytes of
the SHA-256 of the recipient's lower-cased address, and a MAC over both (HMAC-SHA256 under a key
derived from the service's secret), base64url. It shows no address and cannot be forged or altered.
Following it suppresses that recipient, and only that one, in the sender's organization: each
recipient of a message gets a copy with a link of their own (dispatch sends one per recipient).

Tokens made before links were per recipient name only the message: they still unsubscribe the
message's one recipient where it had one, and nobody where it had several (the link cannot tell
which of them followed it; unsubscribing its first `To` would let any other recipient unsubscribe
someone else).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from uuid import UUID, uuid5

import asyncpg

from schemas.events import SuppressionAdded, SuppressionAddedPayload
from services.common.domain import signed
from services.common.settings import CommonSettings

# Every address a message of ours was sent to (To, Cc, Bcc, in that order, lower-cased): recorded before
# it went out (services/common/domain/sent.py), or in the views.
SENT = """
SELECT org_id, identity_id, recipients FROM (
    SELECT org_id, identity_id, recipients, 0 AS source FROM sent_recipients WHERE message_id = $1
    UNION ALL
    SELECT org_id, identity_id, ARRAY(SELECT lower(a) FROM unnest(to_addrs || cc_addrs || bcc_addrs) AS a), 1
      FROM messages WHERE id = $1 AND direction = 'outbound'
) sent ORDER BY source LIMIT 1
"""
_TAG_BYTES = 8


def key_of(settings: CommonSettings) -> bytes | None:
    return signed.key_for(settings, "unsubscribe")


def _tag(recipient: str) -> bytes:
    return hashlib.sha256(recipient.strip().lower().encode()).digest()[:_TAG_BYTES]


def token_for(key: bytes, message_id: UUID, recipient: str | None = None) -> str:
    """The token of `recipient`'s copy of a message (without one: the message-only form of old links)."""
    return signed.sign(key, message_id.bytes + (_tag(recipient) if recipient is not None else b""))


def opened(key: bytes, token: str) -> tuple[UUID, bytes | None] | None:
    """The message a token was made for and the tag of its recipient (None: a message-only token), or
    None if it is not one of ours as made."""
    payload = signed.opened(key, token)
    if payload is None or len(payload) not in (16, 16 + _TAG_BYTES):
        return None
    return UUID(bytes=payload[:16]), (payload[16:] or None)


def headers(
    settings: CommonSettings, message_id: UUID, mailbox_email: str, recipient: str
) -> dict[str, str] | None:
    """`List-Unsubscribe` (one-click URL, and a mailto the inbound service understands) and
    `List-Unsubscribe-Post` of `recipient`'s copy; None when no key is configured."""
    key = key_of(settings)
    if key is None:
        return None
    token = token_for(key, message_id, recipient)
    url = f"{settings.public_base_url.rstrip('/')}/u/{token}"
    return {
        "List-Unsubscribe": f"<{url}>, <mailto:{mailbox_email}?subject=unsubscribe%20{token}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


async def follow(pool: asyncpg.Pool, key: bytes, token: str, wait_s: float = 10.0) -> SuppressionAdded | None:
    """The suppression that following `token` adds (the same event however often it is followed), or
    None if the token is not one of ours, names no message we sent, or no recipient of it (a
    message-only token of a message with several recipients). A message sent a moment ago may not be
    recorded yet: it is waited for a little."""
    found = opened(key, token)
    if found is None:
        return None
    message_id, tag = found
    deadline = time.monotonic() + wait_s
    while True:
        row = await pool.fetchrow(SENT, message_id)
        if row is not None or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    if row is None or not row["recipients"]:
        return None
    recipients = list(dict.fromkeys(row["recipients"]))
    if tag is None:  # a link made before links were per recipient
        if len(recipients) != 1:
            return None
        address, event_id = recipients[0], uuid5(message_id, "unsubscribe")
    else:
        address = next((a for a in recipients if _tag(a) == tag), None)
        if address is None:
            return None
        event_id = uuid5(message_id, f"unsubscribe:{address}")
    return SuppressionAdded(
        event_id=event_id, org_id=row["org_id"], identity_id=row["identity_id"],
        correlation_id=f"unsubscribe:{message_id}",
        payload=SuppressionAddedPayload(address=address, reason="unsubscribe", message_id=message_id),
    )  # fmt: skip
