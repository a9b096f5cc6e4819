"""How a reply is threaded, wherever it is composed (decide for the mail, the ingress for its answer). Pure."""

from __future__ import annotations

import re

_REPLY_PREFIX = re.compile(r"^\s*(re|aw|sv|antw)(\[\d+\])?\s*:", re.IGNORECASE)
MAX_REFERENCES = 20


def reply_subject(subject: str) -> str:
    """`Re: ` once: a subject that already starts with a reply prefix is kept as it is."""
    return subject if _REPLY_PREFIX.match(subject) else f"Re: {subject}"


def trimmed_references(refs: tuple[str, ...] | list[str]) -> list[str]:
    """A long thread's References: its first message and the latest ones (RFC 5322 3.6.4 lets a reply
    drop ids; keeping the root and the recent tail is what mail clients do), so neither the header nor
    the events grow with the thread."""
    refs = list(refs)
    return refs if len(refs) <= MAX_REFERENCES else [refs[0], *refs[-(MAX_REFERENCES - 1) :]]
