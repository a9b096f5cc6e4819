"""Relay credentials at rest: Fernet tokens (AES-128-CBC + HMAC-SHA256) under the operator's keys.

`SENDSTREAM_SECRET_KEYS` lists Fernet keys, newest first: values are encrypted with the first and
decrypted with any, so keys rotate by prepending a new one. Stored values carry a prefix; a value
without it was written with no key configured (or before encryption existed) and reads back as is.
"""

from __future__ import annotations

import structlog
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

log = structlog.get_logger("sendstream.secrets")

PREFIX = "fernet:"


class Secrets:
    def __init__(self, keys: list[str]):
        self.fernet = MultiFernet([Fernet(k.encode()) for k in keys]) if keys else None
        if self.fernet is None:
            log.warning("no SENDSTREAM_SECRET_KEYS: relay passwords are stored unencrypted")

    def seal(self, value: str | None) -> str | None:
        if value is None or self.fernet is None:
            return value
        return PREFIX + self.fernet.encrypt(value.encode()).decode()

    def open(self, stored: str | None) -> str | None:
        if stored is None or not stored.startswith(PREFIX):
            return stored
        if self.fernet is None:
            raise RuntimeError("a relay password is encrypted but SENDSTREAM_SECRET_KEYS is not set")
        try:
            return self.fernet.decrypt(stored[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise RuntimeError(
                "a relay password cannot be decrypted with any key in SENDSTREAM_SECRET_KEYS"
            ) from None


def new_key() -> str:
    return Fernet.generate_key().decode()
