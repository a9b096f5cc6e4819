"""Render the RFC 5322 message for an accepted send, with the standard `email` package.

Built with the compat32 `email.mime` classes: the same standard library, about twice as fast as
`EmailMessage` (research/stack.md: MIME building costs more CPU than the SMTP transfer). A body is sent
7bit only when it is ASCII with no line over 998 characters, otherwise base64, so no line ever breaks
RFC 5322's limit.

Addresses go out with their domain in IDNA (ASCII) form. A non-ASCII local part needs a relay that
offers SMTPUTF8 (RFC 6531): `needs_smtputf8` tells dispatch to ask for it. Every header value is
checked once more for control characters (the API refuses them; an event from anywhere else must not
be able to add a header line either): `UnsendableMessage` is a permanent failure of that message.
"""

from __future__ import annotations

import re
from datetime import datetime
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime

import idna

from schemas.events import SendAcceptedPayload

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


def _header(value: str) -> str | Header:
    if m := _UNSAFE_IN_HEADERS.search(value):
        raise UnsendableMessage(f"a header value holds a control character (U+{ord(m.group()):04X})")
    return value if value.isascii() else Header(value, "utf-8")


def _addresses(addresses: list[str]) -> str | Header:
    return _header(", ".join(wire_address(a) for a in addresses))


def render_message(p: SendAcceptedPayload, date: datetime) -> bytes:
    """text and html become a multipart/alternative; Bcc never appears in the headers."""
    text, html = p.content.text, p.content.html
    if text is not None and html is not None:
        msg = MIMEMultipart("alternative")
        msg.attach(_part(text, "plain"))
        msg.attach(_part(html, "html"))
    elif html is not None:
        msg = _part(html, "html")
    else:
        msg = _part(text or "", "plain")
    msg["From"] = _addresses([p.from_addr])
    msg["To"] = _addresses(p.to)
    if p.content.cc:
        msg["Cc"] = _addresses(p.content.cc)
    msg["Subject"] = _header(p.content.subject)
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = _header(p.rfc_message_id)
    if p.content.in_reply_to:
        msg["In-Reply-To"] = _header(p.content.in_reply_to)
    if p.content.references:
        msg["References"] = _header(" ".join(p.content.references))
    return msg.as_bytes(policy=_WIRE)


def envelope_recipients(p: SendAcceptedPayload) -> list[str]:
    """RCPT TO: every recipient, Bcc included, domains in IDNA form."""
    return [wire_address(a) for a in (*p.to, *p.content.cc, *p.content.bcc)]
