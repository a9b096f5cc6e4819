"""Reading received mail with the standard `email` package. Pure.

Received mail is untrusted input: a header that does not parse is read as absent, never an error, so
any message a client could hand over is accepted and kept as it came (its raw bytes are the record).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import getaddresses

from mailparser_reply import EmailReplyParser

from services.common.receiving.reports import Report, read_report

# Quoted history and signatures, in the languages mail clients write their "On … wrote:" lines in.
_REPLIES = EmailReplyParser(languages=["en", "de", "fr", "es", "it", "nl", "pl", "sv", "da", "cs"])

_MSG_ID = re.compile(r"<[^<>\s]+>")
_CONTROL = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]+")
# Auto-Submitted (RFC 3834) and the headers vacation responders and Exchange set.
_AUTO_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress")


@dataclass(frozen=True)
class File:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Parsed:
    rfc_message_id: str
    from_addr: str
    to: list[str]
    cc: list[str]
    subject: str
    text: str | None
    html: str | None
    in_reply_to: str | None
    references: list[str]
    auto_reply: bool
    files: list[File] = field(default_factory=list)
    report: Report | None = None  # a delivery status notification or a feedback report
    reply_text: str | None = None  # the text without quoted history and signature
    reply_to: str | None = None
    # every mailbox of From, then Sender's: the sender rules judge them all
    senders: list[str] = field(default_factory=list)

    @property
    def answers(self) -> list[str]:
        return answers(self.in_reply_to, self.references)


def answers(in_reply_to: str | None, references: list[str]) -> list[str]:
    """The Message-IDs a message may reply to, the likeliest first: In-Reply-To, then References newest
    first."""
    return [*([in_reply_to] if in_reply_to else []), *reversed(references)]


def _header(msg: EmailMessage, name: str) -> str:
    try:
        value = msg.get(name)
    except (ValueError, TypeError, IndexError):
        return ""
    return str(value).strip() if value is not None else ""


def _addresses(msg: EmailMessage, name: str) -> list[str]:
    try:
        header = msg.get(name)
        found = [a.addr_spec for a in getattr(header, "addresses", ()) if a.addr_spec and "@" in a.addr_spec]
    except (ValueError, TypeError, IndexError):
        return []
    return list(dict.fromkeys(found))


def _senders(msg: EmailMessage) -> list[str]:
    """Every mailbox the From and Sender headers name, in each of their occurrences: as the structured
    parser reads them, and as the lenient one does (an address the first refuses, such as one whose
    domain ends in a dot, is a sender all the same: receiving systems deliver to it)."""
    found = [*_addresses(msg, "From"), *_addresses(msg, "Sender")]
    try:
        raw = [re.sub(r"\r?\n", "", str(v)) for k, v in msg.raw_items() if k.lower() in ("from", "sender")]
        found += [a for _, a in getaddresses(raw) if "@" in a]
    except (ValueError, TypeError, IndexError):
        pass
    return list(dict.fromkeys(found))


def _body(msg: EmailMessage, subtype: str) -> str | None:
    """The body of this type, with plain line ends and without NUL (PostgreSQL cannot store it as text)."""
    try:
        part = msg.get_body((subtype,))
        return part.get_content().replace("\r\n", "\n").replace("\0", "") if part is not None else None
    except (LookupError, ValueError, TypeError, AttributeError):
        return None


def _files(msg: EmailMessage) -> list[File]:
    files = []
    try:
        parts = list(msg.iter_attachments())
    except (TypeError, AttributeError):
        return []
    for i, part in enumerate(parts):
        data = part.get_payload(decode=True)
        if data is None:  # a message/rfc822 or multipart attachment: kept as it is
            data = part.as_bytes()
        name = part.get_filename() or f"attachment-{i + 1}"
        files.append(File(name, part.get_content_type(), data))
    return files


def _auto_reply(msg: EmailMessage) -> bool:
    auto = _header(msg, "Auto-Submitted").lower()
    if auto and auto != "no":
        return True
    if _header(msg, "Precedence").lower() in ("auto_reply", "auto-reply"):
        return True
    return any(_header(msg, h) for h in _AUTO_HEADERS)


def parse(raw: bytes, envelope_from: str = "") -> Parsed:
    """What a received message says. A message without a Message-ID gets one derived from its bytes."""
    msg = message_from_bytes(raw, policy=policy.default)
    ids = _MSG_ID.findall(_header(msg, "Message-ID"))
    in_reply_to = _MSG_ID.findall(_header(msg, "In-Reply-To"))
    senders = _addresses(msg, "From")
    text = _body(msg, "plain")
    return Parsed(
        rfc_message_id=ids[0] if ids else f"<{hashlib.sha256(raw).hexdigest()[:32]}@received.sendstream>",
        from_addr=senders[0] if senders else envelope_from,
        to=_addresses(msg, "To"),
        cc=_addresses(msg, "Cc"),
        subject=_CONTROL.sub(" ", _header(msg, "Subject")),  # it goes into our replies' headers
        text=text,
        html=_body(msg, "html"),
        in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=_MSG_ID.findall(_header(msg, "References")),
        auto_reply=_auto_reply(msg),
        files=_files(msg),
        report=read_report(msg),
        reply_text=_reply_text(text),
        reply_to=next(iter(_addresses(msg, "Reply-To")), None),
        senders=_senders(msg),
    )


def _reply_text(text: str | None) -> str | None:
    if not text:
        return None
    try:
        replies = _REPLIES.read(text=text).replies
        return (replies[0].body.strip() or None) if replies else None  # the newest part, no signature
    except Exception:  # a library's parse of untrusted text: without it, the text is still there
        return None
