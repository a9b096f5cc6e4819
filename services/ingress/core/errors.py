"""What the core raises for a dialect to word: the HTTP layer turns it into that dialect's error."""

from __future__ import annotations


class NotFound(Exception):
    """Something a request names does not exist or is another organization's: 404 in every dialect,
    worded with the dialect's noun for `kind` (the identities dialect: "Identity not found")."""

    def __init__(self, kind: str):
        super().__init__(f"{kind} not found")
        self.kind = kind


class Conflict(Exception):
    """What a request would create exists already (a handle, an address in a pool): 409."""


class Forbidden(Exception):
    """The caller's organization may not do this (use an address at a domain it does not hold): 403."""


class RateLimited(Exception):
    """Too many requests for now: 429 with Retry-After."""

    def __init__(self, message: str, retry_after_s: int, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.headers = headers or {}


class TooLarge(Exception):
    """A request over a size limit: 413 with the message, which names the field and the limit."""


class Invalid(Exception):
    """A request the core refuses as it is (an attachment that must not be sent): 400 with the message,
    which names the offending field."""


class Unavailable(Exception):
    """Not done now, and safe to repeat (a cancel decide did not decide in time): 503 with Retry-After."""
