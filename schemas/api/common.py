"""Validation shared by every dialect: addresses, header-safe strings, the error body."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

FORBIDDEN_IN_HEADERS = ("\r", "\n", "\0")


def header_safe(value: str) -> str:
    """Anything that lands in a mail header must not be able to break the header block."""
    if any(c in value for c in FORBIDDEN_IN_HEADERS):
        raise ValueError("must not contain CR, LF or NUL characters")
    return value


def email_address(value: str) -> str:
    """A single bare address (no display name), syntax-checked; the domain is lower-cased."""
    header_safe(value)
    try:
        # test_environment: no DNS lookups, and RFC 2606 `.test` domains are allowed (local set-ups, tests).
        result = validate_email(value, check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        raise ValueError(f"is not a valid email address ({exc})") from None
    return result.normalized


def timezone_name(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("is not a known IANA time zone") from None
    return value


def iso(value: datetime | None) -> str | None:
    """Timestamps on the wire: UTC, milliseconds, `Z`."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


HeaderText = Annotated[str, AfterValidator(header_safe)]
EmailAddress = Annotated[str, AfterValidator(email_address)]
TimeZone = Annotated[str, AfterValidator(timezone_name)]
Subject = Annotated[str, Field(max_length=998), AfterValidator(header_safe)]


class ApiModel(BaseModel):
    """Request bodies: unknown fields are an error naming the field, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail
