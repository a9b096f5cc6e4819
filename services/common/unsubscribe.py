"""One-click unsubscribe (RFC 8058): the token a send's `List-Unsubscribe` carries, and reading it back.

A token is the message's id and a MAC over it (HMAC-SHA256 under a key derived from the service's
secret), base64url: it names no address and cannot be forged or altered. Following it suppresses the
message's recipient (its first `To`, the conversation's counterpart) in the sender's organization.
"""

from __future__ import annotations

import asyncio
import time
from uuid import UUID, uuid5

import asyncpg

from schemas.events import SuppressionAdded, SuppressionAddedPayload
from services.common import signed
from services.common.settings import CommonSettings

SENT = "SELECT org_id, identity_id, to_addrs FROM messages WHERE id = $1 AND direction = 'outbound'"


def key_of(settings: CommonSettings) -> bytes | None:
    return signed.key_for(settings, "unsubscribe")


def token_for(key: bytes, message_id: UUID) -> str:
    return signed.sign(key, message_id.bytes)


def message_of(key: bytes, token: str) -> UUID | None:
    """The message a token was made for, or None if it is not one of ours as made."""
    payload = signed.opened(key, token)
    return UUID(bytes=payload) if payload is not None and len(payload) == 16 else None


def headers(settings: CommonSettings, message_id: UUID, mailbox_email: str) -> dict[str, str] | None:
    """`List-Unsubscribe` (one-click URL, and a mailto the inbound service understands) and
    `List-Unsubscribe-Post`; None when no key is configured."""
    key = key_of(settings)
    if key is None:
        return None
    token = token_for(key, message_id)
    url = f"{settings.public_base_url.rstrip('/')}/u/{token}"
    return {
        "List-Unsubscribe": f"<{url}>, <mailto:{mailbox_email}?subject=unsubscribe%20{token}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


async def follow(pool: asyncpg.Pool, key: bytes, token: str, wait_s: float = 10.0) -> SuppressionAdded | None:
    """The suppression that following `token` adds (the same event however often it is followed), or
    None if the token is not one of ours or names no message we sent. A message sent a moment ago may
    not be in the views yet: it is waited for a little."""
    message_id = message_of(key, token)
    if message_id is None:
        return None
    deadline = time.monotonic() + wait_s
    while True:
        row = await pool.fetchrow(SENT, message_id)
        if row is not None or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    if row is None or not row["to_addrs"]:
        return None
    return SuppressionAdded(
        event_id=uuid5(message_id, "unsubscribe"), org_id=row["org_id"], identity_id=row["identity_id"],
        correlation_id=f"unsubscribe:{message_id}",
        payload=SuppressionAddedPayload(address=row["to_addrs"][0].lower(), reason="unsubscribe", message_id=message_id),
    )  # fmt: skip
