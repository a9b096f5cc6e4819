"""Verifying a webhook sendstream signed (Standard Webhooks: `webhook-id`, `webhook-timestamp`,
`webhook-signature`; the same scheme AgentMail's endpoints get under `svix-` names)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

TOLERANCE_S = 5 * 60


class InvalidSignature(Exception):
    """The body was not signed with this secret, was changed, or is too old (or from the future)."""


def verify_webhook(
    secret: str, body: bytes | str, headers: Mapping[str, str], *, tolerance_s: int = TOLERANCE_S, now: float | None = None
) -> dict[str, Any]:
    """The webhook's JSON if one of its signatures is the secret's over this very body and its timestamp
    is within `tolerance_s` of now; InvalidSignature otherwise. `secret`: the endpoint's `whsec_...`."""
    got = {k.lower(): v for k, v in headers.items()}
    prefix = "webhook" if "webhook-id" in got else "svix"
    msg_id, stamp, signatures = (got.get(f"{prefix}-{n}", "") for n in ("id", "timestamp", "signature"))
    if not (msg_id and stamp.isdigit() and signatures):
        raise InvalidSignature("missing webhook-id, webhook-timestamp or webhook-signature")
    if abs((time.time() if now is None else now) - int(stamp)) > tolerance_s:
        raise InvalidSignature("the timestamp is outside the tolerance")
    text = body.decode() if isinstance(body, bytes) else body
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.{text}".encode(), hashlib.sha256).digest()).decode()
    for signature in signatures.split():
        version, _, value = signature.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return json.loads(text)
    raise InvalidSignature("no signature matches")
