"""sendstream's Python client: `Sendstream` (sync) and `AsyncSendstream`, typed models, typed errors,
and `verify_webhook`. See clients/python/README.md."""

from sendstream_client import models
from sendstream_client.client import AsyncSendstream, Sendstream
from sendstream_client.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    OutcomeUnknown,
    RateLimited,
    SendstreamError,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from sendstream_client.webhooks import InvalidSignature, verify_webhook

__all__ = [
    "AsyncSendstream", "BadRequest", "Conflict", "Forbidden", "InvalidSignature", "NotFound", "OutcomeUnknown",
    "RateLimited", "Sendstream", "SendstreamError", "TooLarge", "Unauthorized", "Unavailable", "models",
    "verify_webhook",
]  # fmt: skip
