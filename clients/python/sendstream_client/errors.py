"""What the API refused, as exceptions an agent can act on: each carries the HTTP status, the API's
error `type` and its `message` (which names the field at fault), and `retry_after` where the server
said when to try again."""

from __future__ import annotations

from typing import Any


class SendstreamError(Exception):
    """Any answer the API gave as an error."""

    def __init__(self, status: int, type_: str, message: str, retry_after: float | None = None, body: Any = None):
        super().__init__(f"{status} {type_}: {message}")
        self.status, self.type, self.message, self.retry_after, self.body = status, type_, message, retry_after, body


class BadRequest(SendstreamError):
    """400: the message names the field."""


class Unauthorized(SendstreamError):
    """401: the key is missing, wrong or revoked."""


class Forbidden(SendstreamError):
    """403: the key lacks the scope."""


class NotFound(SendstreamError):
    """404 (also: another organization's)."""


class Conflict(SendstreamError):
    """409: e.g. an Idempotency-Key reused with another request, a draft already decided."""


class TooLarge(SendstreamError):
    """413: the body, or the message it makes, is over the limit the message names."""


class RateLimited(SendstreamError):
    """429: every recipient rejected (daily cap), or a rate limit hit; `retry_after` when to try again."""


class Unavailable(SendstreamError):
    """503 with Retry-After: nothing was done; retrying after it is safe."""


class OutcomeUnknown(SendstreamError):
    """503 without Retry-After (`outcome_unknown`): the send may have been accepted. Retry only with the
    same Idempotency-Key (this client does, when it retries), which never makes a second send."""


BY_STATUS: dict[int, type[SendstreamError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 413: TooLarge,
    429: RateLimited,
}  # fmt: skip


def error_for(status: int, body: Any, retry_after: float | None) -> SendstreamError:
    detail = body.get("error", {}) if isinstance(body, dict) else {}
    type_, message = detail.get("type", "error"), detail.get("message", str(body)[:500])
    if status == 503:
        kind: type[SendstreamError] = Unavailable if retry_after is not None else OutcomeUnknown
    else:
        kind = BY_STATUS.get(status, SendstreamError)
    return kind(status, type_, message, retry_after, body)
