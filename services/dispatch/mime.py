"""Render the RFC 5322 message for an accepted send, with the standard `email` package.

Built with the compat32 `email.mime` classes: the same standard library, about twice as fast as
`EmailMessage` (research/stack.md: MIME building costs more CPU than the SMTP transfer). A body is sent
7bit only when it is ASCII with no line over 998 characters, otherwise base64, so no line ever breaks
RFC 5322's limit.
"""

from __future__ import annotations

from datetime import datetime
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime

from schemas.events import SendAcceptedPayload

_WIRE = compat32.clone(linesep="\r\n")


def _part(body: str, subtype: str) -> MIMEText:
    plain = body.isascii() and all(len(line) <= 998 for line in body.splitlines())
    return MIMEText(body, subtype, "us-ascii" if plain else "utf-8")


def _header(value: str) -> str | Header:
    return value if value.isascii() else Header(value, "utf-8")


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
    msg["From"] = p.from_addr
    msg["To"] = ", ".join(p.to)
    if p.content.cc:
        msg["Cc"] = ", ".join(p.content.cc)
    msg["Subject"] = _header(p.content.subject)
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = p.rfc_message_id
    if p.content.in_reply_to:
        msg["In-Reply-To"] = p.content.in_reply_to
    if p.content.references:
        msg["References"] = " ".join(p.content.references)
    return msg.as_bytes(policy=_WIRE)


def envelope_recipients(p: SendAcceptedPayload) -> list[str]:
    return [*p.to, *p.content.cc, *p.content.bcc]
