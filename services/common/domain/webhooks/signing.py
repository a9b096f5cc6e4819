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


STANDARD = "webhook"  # webhook-id, webhook-timestamp, webhook-signature


def headers(
    webhook_id: str, timestamp: int, body: str, signing_secrets: list[str], prefix: str = STANDARD
) -> dict[str, str]:
    """The headers of one attempt. `prefix`: `webhook`, or `svix` for receivers that verify with Svix's
    library (its scheme is the same signature under `svix-` names)."""
    return {
        f"{prefix}-id": webhook_id,
        f"{prefix}-timestamp": str(timestamp),
        f"{prefix}-signature": signature_header(webhook_id, timestamp, body, signing_secrets),
        "content-type": "application/json",
        "user-agent": "sendstream-webhooks/1",
    }
