"""Render the RFC 5322 message for an accepted send, with the standard `email` package.

Built with the compat32 `email.mime` classes: the same standard library, about twice as fast as
`EmailMessage` (research/stack.md: MIME building costs more CPU than the SMTP transfer). A body is sent
7bit only when it is ASCII with no line over 998 characters, otherwise base64, so no line ever breaks
RFC 5322's limit.

Addresses go out with their domain in IDNA (ASCII) form. A non-ASCII local part needs a relay that
offers SMTPUTF8 (RFC 6531): `needs_smtputf8` tells dispatch to ask for it. Every header value is
checked once more for control characters (the API refuses them; an event from anywhere else must not
be able to add a header line either): `UnsendableMessage` is a permanent failure of that message.

Attachments make the message multipart/mixed: the body first, then each file base64-encoded with its
name in `Content-Disposition` (RFC 2231 `filename*=utf-8''…` when the name is not ASCII) and in the
`name` parameter of its `Content-Type` for older clients.

A forward names the message it forwards in `X-Forwarded-Message-Id`; a wrapped one carries that
message's raw MIME, as it was kept, in one `message/rfc822` part after the caller's note.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from email import message_from_bytes
from email.header import Header
from email.mime.application import MIMEApplication
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime

import idna

from schemas.events import Attachment, Content, SendAcceptedPayload

_WIRE = compat32.clone(linesep="\r\n")
_UNSAFE_IN_HEADERS = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")


class UnsendableMessage(ValueError):
    """A message no relay can be given as it is (a header that would break, a domain with no IDNA form)."""


def wire_address(address: str) -> str:
    """The address with its domain in IDNA form: `ana@bücher.example` -> `ana@xn--bcher-kva.example`."""
    local, _, domain = address.rpartition("@")
    if domain.isascii():
        return address
    try:
        return f"{local}@{idna.encode(domain, uts46=True).decode()}"
    except idna.IDNAError as exc:
        raise UnsendableMessage(f"the domain of {address} has no IDNA form ({exc})") from None


def needs_smtputf8(addresses: list[str]) -> bool:
    """A non-ASCII local part can only be sent through a relay that offers SMTPUTF8."""
    return any(not a.isascii() for a in addresses)


def _part(body: str, subtype: str) -> MIMEText:
    plain = body.isascii() and all(len(line) <= 998 for line in body.splitlines())
    return MIMEText(body, subtype, "us-ascii" if plain else "utf-8")


def _safe(value: str) -> str:
    if m := _UNSAFE_IN_HEADERS.search(value):
        raise UnsendableMessage(f"a header value holds a control character (U+{ord(m.group()):04X})")
    return value


def _header(value: str) -> str | Header:
    return value if _safe(value).isascii() else Header(value, "utf-8")


def _addresses(addresses: list[str]) -> str | Header:
    return _header(", ".join(wire_address(a) for a in addresses))


def _file(attachment: Attachment, data: bytes) -> MIMEBase:
    part = MIMEApplication(data)  # base64; the real type is set below
    maintype, _, subtype = attachment.content_type.partition("/")
    part.set_type(f"{maintype}/{subtype}" if subtype else "application/octet-stream")
    name = _safe(attachment.filename)
    filename = name if name.isascii() else ("utf-8", "", name)  # RFC 2231
    part.set_param("name", filename)
    part.add_header("Content-Disposition", "attachment", filename=filename)
    return part


def _body(content: Content) -> MIMEBase:
    text, html = content.text, content.html
    if text is not None and html is not None:
        msg = MIMEMultipart("alternative")
        msg.attach(_part(text, "plain"))
        msg.attach(_part(html, "html"))
        return msg
    if html is not None:
        return _part(html, "html")
    return _part(text or "", "plain")


def blob_hashes(content: Content) -> list[str]:
    """The blobs a message is composed from, besides its bodies: its files and a wrapped original."""
    wrapped = content.forwarded.original if content.forwarded else None
    return [a.sha256 for a in content.attachments] + ([wrapped.sha256] if wrapped else [])


def _wrapped(raw: bytes) -> MIMEMessage:
    part = MIMEMessage(message_from_bytes(raw, policy=compat32))
    part.add_header("Content-Disposition", "attachment", filename="forwarded.eml")
    return part


def compose(
    from_addr: str,
    to: list[str],
    content: Content,
    rfc_message_id: str,
    date: datetime,
    files: Mapping[str, bytes] | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> bytes:
    """The message as the relay gets it. text and html become a multipart/alternative; attachments (their
    bytes in `files` by sha256) a multipart/mixed around it; Bcc never appears in the headers."""
    msg = _body(content)
    wrapped = content.forwarded.original if content.forwarded else None
    if content.attachments or wrapped:
        body, msg = msg, MIMEMultipart("mixed")
        msg.attach(body)
        if wrapped:
            msg.attach(_wrapped((files or {})[wrapped.sha256]))
        for a in content.attachments:
            msg.attach(_file(a, (files or {})[a.sha256]))
    msg["From"] = _addresses([from_addr])
    msg["To"] = _addresses(to)
    if content.cc:
        msg["Cc"] = _addresses(content.cc)
    msg["Subject"] = _header(content.subject)
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = _header(rfc_message_id)
    if content.in_reply_to:
        msg["In-Reply-To"] = _header(content.in_reply_to)
    if content.references:
        msg["References"] = _header(" ".join(content.references))
    if content.reply_to:
        msg["Reply-To"] = _addresses([content.reply_to])
    if content.forwarded and content.forwarded.rfc_message_id:
        msg["X-Forwarded-Message-Id"] = _header(content.forwarded.rfc_message_id)
    for name, value in (extra_headers or {}).items():
        msg[name] = _header(value)
    return msg.as_bytes(policy=_WIRE)


def render_message(
    p: SendAcceptedPayload,
    date: datetime,
    files: Mapping[str, bytes] | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> bytes:
    return compose(p.from_addr, p.to, p.content, p.rfc_message_id, date, files, extra_headers)


def every_recipient(p: SendAcceptedPayload) -> list[str]:
    """To, Cc and Bcc, as written."""
    return [*p.to, *p.content.cc, *p.content.bcc]


def envelope_recipients(p: SendAcceptedPayload) -> list[str]:
    """RCPT TO: every recipient, Bcc included, domains in IDNA form."""
    return [wire_address(a) for a in every_recipient(p)]
