"""Reading received mail with the standard `email` package. Pure.

Received mail is untrusted input: a header that does not parse is read as absent, never an error, so
any message a client could hand over is accepted and kept as it came (its raw bytes are the record).
Every string read from it is made storable here, once, before any event is built: bytes the email
package could not decode read as UTF-8 (else U+FFFD), NUL and lone surrogates replaced, control
characters out of one-line fields, lengths bounded (`storable`, `one_line`). Only a structure beyond
the `Limits` (MIME nesting, parts, header fields) is refused, for good (`Unacceptable`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage, Message
from email.policy import EmailPolicy
from email.utils import getaddresses
from typing import Any

from mailparser_reply import EmailReplyParser

from mail.reports import Report, read_report

# Quoted history and signatures, in the languages mail clients write their "On … wrote:" lines in.
_REPLIES = EmailReplyParser(languages=["en", "de", "fr", "es", "it", "nl", "pl", "sv", "da", "cs"])

_MSG_ID = re.compile(r"<[^<>\s]+>")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# Surrogates that stand for no byte: U+DC80-U+DCFF are the bytes 0x80-0xFF the email package kept undecoded.
_LONE_SURROGATE = re.compile("[\ud800-\udc7f\udd00-\udfff]")
_PATH = re.compile(r"[/\\]")
# Auto-Submitted (RFC 3834) and the headers vacation responders and Exchange set.
_AUTO_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress")

# The longest field kept, in characters. A Message-ID or an address is looked up through PostgreSQL
# indexes, whose entries hold at most 2704 bytes: a longer one is no real one, and is read as absent.
MAX_TOKEN = 500
MAX_SUBJECT = 1000
MAX_FILENAME = 255
MAX_DIAGNOSTIC = 1000
MAX_REFERENCES = 100  # the thread's root and its latest ones
MAX_REPLY_TEXT = 16_000  # the reply travels in events (a large text goes to the blob store)
_REPLY_READ = 100_000  # how much of the text the reply parser reads: the newest part is at the top


# How much of one header's raw text the email package's header parser is given: its cost grows faster
# than the text (a subject of 100,000 encoded words took gigabytes), and nothing kept is longer.
# Address lists get more room (a message may name many recipients); the raw message keeps them all.
MAX_HEADER_CHARS = 4 * 1024
MAX_ADDRESS_LIST_CHARS = 64 * 1024
MAX_HEADERS_CHARS = 1024 * 1024  # every header block's text together (the message's and its parts')
_ADDRESS_LISTS = {"to", "cc"}


class _Bounded(EmailPolicy):
    """policy.default, whose header parser reads at most the first MAX_HEADER_CHARS of a header, once:
    the email package parses a header again on every look (a part's Content-Type, a dozen times)."""

    _parsed: dict[tuple[str, str], Any] | None = None  # each message's own (see `policy`)

    def header_fetch_parse(self, name: str, value: str) -> Any:
        bound = MAX_ADDRESS_LIST_CHARS if name.lower() in _ADDRESS_LISTS else MAX_HEADER_CHARS
        key = (name, value[:bound])
        if self._parsed is None:
            return super().header_fetch_parse(*key)
        if (parsed := self._parsed.get(key)) is None:
            parsed = self._parsed[key] = super().header_fetch_parse(*key)
        return parsed


def policy() -> _Bounded:
    """A policy for one message (its headers parsed once, for as long as the message is read)."""
    return _Bounded(_parsed={})


@dataclass(frozen=True)
class Limits:
    """How much structure a received message may have (settings `intake_max_*`)."""

    nesting: int = 32  # parts inside parts, the message itself at depth 0
    parts: int = 500
    header_fields: int = 1000  # in any one header block (the message's, or a part's)


class Unacceptable(Exception):
    """A received message refused for good: the same bytes would be refused every time, so the sender
    hears a permanent SMTP reply (`reply`) and never tries again."""

    def __init__(self, code: int, status: str, reason: str):
        super().__init__(reason)
        self.code, self.status, self.reason = code, status, reason

    @property
    def reply(self) -> str:
        return f"{self.code} {self.status} {self.reason}"


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


def storable(text: str) -> str:
    """`text` as PostgreSQL and JSON can keep it: bytes the email package kept undecoded (as surrogate
    escapes) read as UTF-8, or U+FFFD where they are none; any other surrogate and NUL U+FFFD."""
    if text.isascii() and "\0" not in text:
        return text
    text = _LONE_SURROGATE.sub("\ufffd", text)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace").replace("\0", "\ufffd")


def one_line(text: str, limit: int) -> str:
    """`text` storable and on one line (each run of control characters a space), at most `limit` long."""
    return _CONTROL.sub(" ", storable(text)).strip()[:limit]


def token(text: str) -> str | None:
    """A Message-ID or an address, storable; None when it is too long to be a real one."""
    text = one_line(text, MAX_TOKEN + 1)
    return text if text and len(text) <= MAX_TOKEN else None


def header(msg: Message, name: str) -> str:
    """A header's text, "" when it is absent or cannot be read."""
    try:
        value = msg.get(name)
        return str(value).strip() if value is not None else ""
    except Exception:  # a header the email package cannot read (any error of its parser) is absent
        return ""


def _ids(msg: Message, name: str) -> list[str]:
    return [t for i in _MSG_ID.findall(header(msg, name)) if (t := token(i))]


def _addresses(msg: EmailMessage, name: str) -> list[str]:
    try:
        header = msg.get(name)
        found = [a.addr_spec for a in getattr(header, "addresses", ()) if a.addr_spec and "@" in a.addr_spec]
    except Exception:  # as in _header
        return []
    return list(dict.fromkeys(t for a in found if (t := token(a))))


def _senders(msg: EmailMessage) -> list[str]:
    """Every mailbox the From and Sender headers name, in each of their occurrences: as the structured
    parser reads them, and as the lenient one does (an address the first refuses, such as one whose
    domain ends in a dot, is a sender all the same: receiving systems deliver to it)."""
    found = [*_addresses(msg, "From"), *_addresses(msg, "Sender")]
    try:
        raw = [re.sub(r"\r?\n", "", str(v)) for k, v in msg.raw_items() if k.lower() in ("from", "sender")]
        found += [t for _, a in getaddresses(raw) if "@" in a and (t := token(a))]
    except (ValueError, TypeError, IndexError):
        pass
    return list(dict.fromkeys(found))


def _body(msg: EmailMessage, subtype: str) -> str | None:
    """The body of this type, with plain line ends and without NUL (PostgreSQL cannot store it as text)."""
    try:
        part = msg.get_body((subtype,))
        content = part.get_content() if part is not None else None
        if (
            isinstance(content, str)
            and "\ufffd" in content
            and part.get_content_charset() in (None, "us-ascii")
        ):
            with contextlib.suppress(UnicodeDecodeError):  # 8-bit text with no charset said: UTF-8 (RFC 6532)
                content = part.get_payload(decode=True).decode()
    except Exception:  # a body the email package cannot decode: the raw message still has it
        return None
    if not isinstance(content, str):
        return None
    return storable(content.replace("\r\n", "\n").replace("\0", ""))


def _file_name(part: Message, i: int) -> str:
    """The part's file name, storable, on one line, no path, at most MAX_FILENAME long (its extension
    kept); `attachment-<i>` if it has none."""
    try:
        name = part.get_filename() or ""
    except Exception:  # as in _header
        name = ""
    name = _PATH.sub("_", one_line(str(name), 4 * MAX_FILENAME))
    if name in ("", ".", ".."):
        return f"attachment-{i}"
    if len(name) > MAX_FILENAME:
        stem, dot, ext = name.rpartition(".")
        keep = dot and 0 < len(ext) <= 16
        name = f"{stem[: MAX_FILENAME - len(ext) - 1]}.{ext}" if keep else name[:MAX_FILENAME]
    return name


def unique(names: list[str]) -> list[str]:
    """The names, each one once (compared case-insensitively): a name seen before gets `-2`, `-3`...
    before its extension (`report.pdf`, `report-2.pdf`), so every file can be asked for by name."""
    taken: set[str] = set()
    out = []
    for name in names:
        stem, dot, ext = name.rpartition(".") if "." in name.lstrip(".") else (name, "", "")
        candidate, n = name, 1
        while candidate.casefold() in taken:
            n += 1
            candidate = f"{stem}-{n}.{ext}" if dot else f"{name}-{n}"
        taken.add(candidate.casefold())
        out.append(candidate)
    return out


def _files(msg: EmailMessage) -> list[File]:
    try:
        parts = list(msg.iter_attachments())
    except Exception:  # as in _body
        return []
    found = []
    for i, part in enumerate(parts):
        try:
            data = part.get_payload(decode=True)
        except Exception:  # as in _body
            data = None
        if not isinstance(data, bytes):  # a message/rfc822 or multipart attachment: kept as it is
            try:
                data = part.as_bytes()
            except Exception:
                data = b""
        try:
            kind = part.get_content_type()
        except Exception:
            kind = "application/octet-stream"
        found.append((_file_name(part, i + 1), one_line(kind, 255) or "application/octet-stream", data))
    names = unique([name for name, _, _ in found])
    return [File(name, kind, data) for name, (_, kind, data) in zip(names, found, strict=True)]


def _auto_reply(msg: EmailMessage) -> bool:
    auto = header(msg, "Auto-Submitted").lower()
    if auto and auto != "no":
        return True
    if header(msg, "Precedence").lower() in ("auto_reply", "auto-reply"):
        return True
    return any(header(msg, h) for h in _AUTO_HEADERS)


def _report(msg: EmailMessage) -> Report | None:
    try:
        return _cleaned(read_report(msg))
    except Exception:  # a report that cannot be read is mail like any other
        return None


def _cleaned(value: Any, limit: int = MAX_TOKEN) -> Any:
    """A report with every string in it one-line and bounded (a diagnostic to MAX_DIAGNOSTIC)."""
    if isinstance(value, str):
        return one_line(value, limit)
    if isinstance(value, list | tuple):
        return type(value)(_cleaned(v, limit) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{
            f.name: _cleaned(getattr(value, f.name), MAX_DIAGNOSTIC if f.name == "diagnostic" else MAX_TOKEN)
            for f in dataclasses.fields(value) if f.init
        })  # fmt: skip
    return value


def check_structure(msg: Message, limits: Limits) -> None:
    """Refuse (`Unacceptable`) a message nested deeper, or with more parts or header fields, than `limits`."""
    parts, header_chars, stack = 0, 0, [(msg, 0)]
    while stack:
        part, depth = stack.pop()
        parts += 1
        if depth > limits.nesting:
            raise _too_deep(limits)
        if parts > limits.parts:
            raise Unacceptable(554, "5.6.0", f"the message has more than {limits.parts} MIME parts")
        if len(part) > limits.header_fields:
            raise Unacceptable(554, "5.6.0", f"a header block has more than {limits.header_fields} fields")
        header_chars += sum(len(v) for _, v in part.raw_items())
        if header_chars > MAX_HEADERS_CHARS:
            raise Unacceptable(
                554, "5.6.0", f"the message's headers take more than {MAX_HEADERS_CHARS} characters"
            )
        payload = part.get_payload() if part.is_multipart() else None
        if isinstance(payload, list):
            stack.extend((p, depth + 1) for p in payload if isinstance(p, Message))


def _too_deep(limits: Limits) -> Unacceptable:
    return Unacceptable(554, "5.6.0", f"the message's MIME parts are nested more than {limits.nesting} deep")


def parse(raw: bytes, envelope_from: str = "", limits: Limits | None = None) -> Parsed:
    """What a received message says, every string storable. A message without a Message-ID gets one
    derived from its bytes. Raises Unacceptable for a structure beyond `limits`."""
    limits = limits or Limits()
    try:
        msg = message_from_bytes(raw, policy=policy())
    except RecursionError:  # the email package's parser recurses once per nested part
        raise _too_deep(limits) from None
    check_structure(msg, limits)
    ids = _ids(msg, "Message-ID")
    in_reply_to = _ids(msg, "In-Reply-To")
    references = _ids(msg, "References")
    if len(references) > MAX_REFERENCES:
        references = [references[0], *references[1 - MAX_REFERENCES :]]
    senders = _addresses(msg, "From")
    text = _body(msg, "plain")
    return Parsed(
        rfc_message_id=ids[0] if ids else f"<{hashlib.sha256(raw).hexdigest()[:32]}@received.sendstream>",
        from_addr=senders[0] if senders else one_line(envelope_from, MAX_TOKEN),
        to=_addresses(msg, "To"),
        cc=_addresses(msg, "Cc"),
        subject=one_line(header(msg, "Subject"), MAX_SUBJECT),  # it goes into our replies' headers
        text=text,
        html=_body(msg, "html"),
        in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=references,
        auto_reply=_auto_reply(msg),
        files=_files(msg),
        report=_report(msg),
        reply_text=_reply_text(text),
        reply_to=next(iter(_addresses(msg, "Reply-To")), None),
        senders=_senders(msg),
    )


def _reply_text(text: str | None) -> str | None:
    if not text:
        return None
    try:
        replies = _REPLIES.read(text=text[:_REPLY_READ]).replies
        reply = replies[0].body.strip() if replies else ""  # the newest part, no signature
    except Exception:  # a library's parse of untrusted text: without it, the text is still there
        return None
    return storable(reply[:MAX_REPLY_TEXT]) or None
