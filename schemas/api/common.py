"""Validation shared by every dialect: addresses, header-safe strings, the error body."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from schemas.limits import FILENAME_MAX, MAX_RECIPIENTS
from schemas.schedule import Timing, timing

# Anything that lands in a mail header: every C0 control (tab included), DEL, NEL and the Unicode line
# and paragraph separators. With none of them a value cannot start a header line of its own, whatever
# a mail library downstream does with it.
_UNSAFE_IN_HEADERS = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")

# RFC 5321 4.5.3.1: a local part of at most 64 octets, a path of at most 256 (254 between the brackets).
MAX_LOCAL_PART = 64
MAX_ADDRESS = 254


def header_safe(value: str) -> str:
    """Anything that lands in a mail header must not be able to break the header block."""
    if m := _UNSAFE_IN_HEADERS.search(value):
        raise ValueError(
            f"must not contain control characters or line separators (U+{ord(m.group()):04X} at {m.start()})"
        )
    return value


def email_address(value: str) -> str:
    """A single bare address (no display name), syntax-checked, within RFC 5321's lengths; the domain
    is lower-cased and shown in Unicode (dispatch sends it as IDNA)."""
    header_safe(value)
    try:
        # test_environment: no DNS lookups, and RFC 2606 `.test` domains are allowed (local set-ups, tests).
        result = validate_email(value, check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        raise ValueError(f"is not a valid email address ({exc})") from None
    if len(result.local_part.encode()) > MAX_LOCAL_PART:
        raise ValueError(
            f"is not a valid email address (the part before the @ exceeds {MAX_LOCAL_PART} octets)"
        )
    if len((result.ascii_email or result.normalized).encode()) > MAX_ADDRESS:
        raise ValueError(f"is not a valid email address (longer than {MAX_ADDRESS} octets)")
    return result.normalized


def timezone_name(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file
        raise ValueError("is not a known IANA time zone") from None
    return value


def iso(value: datetime | None) -> str | None:
    """Timestamps on the wire: UTC, milliseconds, `Z`."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# What the API document says of header-bound text (header_safe enforces it, with a clearer message).
HEADER_SAFE_PATTERN = "^[^\\u0000-\\u001f\\u007f\\u0085\\u2028\\u2029]*$"
_HEADER_SAFE_DOC = {"pattern": HEADER_SAFE_PATTERN}

HeaderText = Annotated[str, AfterValidator(header_safe), Field(json_schema_extra=_HEADER_SAFE_DOC)]
EmailAddress = Annotated[
    str,
    AfterValidator(email_address),
    Field(max_length=MAX_ADDRESS, json_schema_extra={"format": "email", **_HEADER_SAFE_DOC}),
]
TimeZone = Annotated[
    str, AfterValidator(timezone_name), Field(json_schema_extra={"description": "An IANA time zone."})
]
Subject = Annotated[
    str, Field(max_length=998, json_schema_extra=_HEADER_SAFE_DOC), AfterValidator(header_safe)
]
MessageIdText = Annotated[
    str, Field(min_length=1, max_length=998, json_schema_extra=_HEADER_SAFE_DOC), AfterValidator(header_safe)
]


def base64_bytes(value: object) -> bytes:
    """Standard base64 (RFC 4648), line breaks allowed, into the bytes it encodes."""
    if not isinstance(value, str):
        raise ValueError("must be a base64 string")
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64") from None


def filename(value: str) -> str:
    """A file's name as it goes into a MIME header: no path, no control character."""
    header_safe(value)
    if "/" in value or "\\" in value or value in {".", ".."}:
        raise ValueError("must be a file name, without a path")
    return value


Base64Content = Annotated[
    bytes,
    BeforeValidator(base64_bytes),
    WithJsonSchema(
        {"type": "string", "contentEncoding": "base64", "description": "The file's bytes, base64."}
    ),
]
FileName = Annotated[
    str,
    Field(min_length=1, max_length=FILENAME_MAX, json_schema_extra=_HEADER_SAFE_DOC),
    AfterValidator(filename),
]
# A bare media type (RFC 6838 names, no parameters), lower-cased: `application/pdf`.
MediaType = Annotated[
    str,
    Field(max_length=255, pattern=r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$"),
    AfterValidator(str.lower),
]


class ApiModel(BaseModel):
    """Request bodies: unknown fields are an error naming the field, not silently dropped; no type is
    coerced into another (`false` is not a number, `"yes"` is not a boolean)."""

    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=False)


_SEND_AT = (
    "Send later (SPEC 3.5): an RFC 3339 instant, or a local date-time without offset with `timezone`. "
    "Decided when it fires, as if it were sent then; cancel it with `POST /v1/messages/{id}/cancel`."
)
_UNLESS_REPLIED = (
    "With a send-at, into an existing conversation: cancel it if a reply reaches the conversation first "
    "(true: not an auto-reply; \"any\": any mail)."
)
_ON_CAP_EXCEEDED = (
    "A recipient the identity's daily cap would refuse: `reject` (the default), or `defer`: scheduled for the "
    "start of the cap's next window (midnight in the identity's time zone), status `scheduled`, reason "
    "`cap_deferred`."
)


class Later(ApiModel):
    """When a send goes out (SPEC 3.5), as the camelCase dialects name it."""

    sendAt: str | None = Field(None, max_length=64, description=_SEND_AT)
    timezone: TimeZone | None = Field(None, description="The IANA time zone of a local `sendAt`.")
    unlessReplied: bool | Literal["any"] | None = Field(None, description=_UNLESS_REPLIED)
    onCapExceeded: Literal["reject", "defer"] | None = Field(None, description=_ON_CAP_EXCEEDED)

    def timing(self, now: datetime, *, reply: bool) -> Timing:
        """Its timing; ScheduleError naming the field."""
        return timing(
            self.sendAt, self.timezone, self.unlessReplied, now, reply=reply, on_cap_exceeded=self.onCapExceeded
        )


class LaterSnake(ApiModel):
    """When a send goes out (SPEC 3.5), as the mailboxes dialect names it."""

    send_at: str | None = Field(None, max_length=64, description=_SEND_AT)
    timezone: TimeZone | None = Field(None, description="The IANA time zone of a local `send_at`.")
    unless_replied: bool | Literal["any"] | None = Field(None, description=_UNLESS_REPLIED)
    on_cap_exceeded: Literal["reject", "defer"] | None = Field(None, description=_ON_CAP_EXCEEDED)

    def timing(self, now: datetime, *, reply: bool) -> Timing:
        """Its timing; ScheduleError naming the field."""
        names = ("send_at", "timezone", "unless_replied")
        return timing(
            self.send_at, self.timezone, self.unless_replied, now, reply=reply, names=names,
            on_cap_exceeded=self.on_cap_exceeded,
        )  # fmt: skip


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorBody(BaseModel):
    """The identities dialect's (and the operator routes') error: `{"error": {"type", "message"}}`."""

    error: ErrorDetail

    @classmethod
    def of(cls, type_: str, message: str) -> ErrorBody:
        return cls(error=ErrorDetail(type=type_, message=message))


class FlatErrorBody(BaseModel):
    """The inboxes dialect's error: `{"error", "message"}`, the message at the top where its clients
    read it ("Inbox not found")."""

    error: str
    message: str

    @classmethod
    def of(cls, type_: str, message: str) -> FlatErrorBody:
        return cls(error=type_, message=message)


def partial_row(**known: Any) -> dict[str, Any]:
    """A messages-view row from what is known of a message (just sent, or not in the view yet), the
    rest empty: `message_out` renders it like any other."""
    return {
        "conv_id": None, "direction": "outbound", "from_addr": None, "inbox_address": None, "to_addrs": [],
        "cc_addrs": [], "bcc_addrs": [], "subject": "", "text_body": None, "html_body": None, "labels": [],
        "attachments": [], "rfc_message_id": None, "reason": None, **known,
    }  # fmt: skip


def event_row(event: Any, stored: dict[str, Any], known: dict[str, Any]) -> dict[str, Any]:
    """The message an event is about, as a messages-view row: the view's row where it has one, what the
    event carries over it, the rest empty (the view may not have the message yet)."""
    return partial_row(**{
        "org_id": event.org_id, "identity_id": event.identity_id, "created_at": event.occurred_at,
        "updated_at": event.occurred_at, **stored, **known,
    })  # fmt: skip


TlsMode = Literal["none", "starttls", "tls"]


class SmtpSettings(ApiModel):
    host: HeaderText = Field(min_length=1, max_length=255)
    port: int = Field(ge=1, le=65535)
    tls: TlsMode = "starttls"
    username: HeaderText | None = None
    password: str | None = None


def check_recipients(to: list[str], cc: list[str], bcc: list[str]) -> None:
    """One message's To, Cc and Bcc (inboxes and mailboxes dialects): at most MAX_RECIPIENTS in all,
    none twice (addresses compared without case)."""
    every = [a.lower() for a in (*to, *cc, *bcc)]
    if len(every) > MAX_RECIPIENTS:
        raise ValueError(f"to, cc and bcc take at most {MAX_RECIPIENTS} recipients in all")
    if dupes := sorted({a for a in every if every.count(a) > 1}):
        raise ValueError(f"{dupes[0]} is listed more than once in to, cc and bcc")
