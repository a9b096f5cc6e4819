"""Standard Webhooks signatures: `whsec_` secrets and the `webhook-signature` header.

Signing itself is the `standardwebhooks` reference library's; this module adds secret generation and
the header listing one signature per secret in use (two during a rotation's grace period).
"""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime

from standardwebhooks import Webhook


def new_secret() -> str:
    """A fresh endpoint secret: 32 random bytes, base64, with the `whsec_` prefix."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def signature_header(webhook_id: str, timestamp: int, body: str, signing_secrets: list[str]) -> str:
    """`v1,<base64>` for each secret, space-separated: a receiver accepts any one that verifies."""
    at = datetime.fromtimestamp(timestamp, UTC)
    return " ".join(Webhook(s).sign(webhook_id, at, body) for s in signing_secrets)


def headers(webhook_id: str, timestamp: int, body: str, signing_secrets: list[str]) -> dict[str, str]:
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(webhook_id, timestamp, body, signing_secrets),
        "content-type": "application/json",
        "user-agent": "sendstream-webhooks/1",
    }
