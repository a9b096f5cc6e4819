"""Tokens only this service can make: a payload and its MAC (HMAC-SHA256, 16 bytes), base64url, under a
key derived for one purpose (unsubscribe links, download links) from the service's secret."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from services.common.settings import CommonSettings

_MAC_BYTES = 16


def key_for(settings: CommonSettings, purpose: str) -> bytes | None:
    """The key of `purpose`: from SENDSTREAM_UNSUBSCRIBE_SECRET, else the first of SENDSTREAM_SECRET_KEYS;
    None with neither."""
    secret = settings.unsubscribe_secret or (settings.secret_keys[0] if settings.secret_keys else None)
    return hashlib.sha256(f"sendstream {purpose}\0".encode() + secret.encode()).digest() if secret else None


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()[:_MAC_BYTES]


def sign(key: bytes, payload: bytes) -> str:
    return base64.urlsafe_b64encode(payload + _mac(key, payload)).decode().rstrip("=")


def opened(key: bytes, token: str) -> bytes | None:
    """The payload a token was made for, or None if it was not made by us as it is."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) <= _MAC_BYTES:
        return None
    payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    return payload if hmac.compare_digest(mac, _mac(key, payload)) else None
