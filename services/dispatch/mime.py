"""Build the RFC 5322 message for an accepted send, with the standard `email` package."""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from schemas.events import SendAcceptedPayload


def build_message(p: SendAcceptedPayload, date: datetime) -> EmailMessage:
    """text and html become a multipart/alternative; Bcc never appears in the headers."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = p.from_addr
    msg["To"] = ", ".join(p.to)
    if p.content.cc:
        msg["Cc"] = ", ".join(p.content.cc)
    msg["Subject"] = p.content.subject
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = p.rfc_message_id
    if p.content.in_reply_to:
        msg["In-Reply-To"] = p.content.in_reply_to
    if p.content.references:
        msg["References"] = " ".join(p.content.references)
    text, html = p.content.text, p.content.html
    if html is not None and text is None:
        msg.set_content(html, subtype="html")
    else:
        msg.set_content(text or "")
        if html is not None:
            msg.add_alternative(html, subtype="html")
    return msg


def envelope_recipients(p: SendAcceptedPayload) -> list[str]:
    return [*p.to, *p.content.cc, *p.content.bcc]
