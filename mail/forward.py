"""What a forward sends (mailboxes dialect), from the stored original. Pure.

- Subject: the caller's, else `Fwd: ` and the original's, never doubled (`Fwd:` or `Fw:` already there,
  any case), `Fwd: (no subject)` for an original without one.
- Inline: the caller's note, then a Gmail-style preamble (From, Date, Subject, To, Cc) and the original
  body, in text and (when either side has HTML) in HTML; the original's files re-attached.
- Wrapped: the caller's note as the body; the original's raw MIME goes as one message/rfc822 part.
- File names: the caller's files keep theirs; an original's that collides gets a `forwarded-` prefix,
  then a numeric suffix (`forwarded-report-2.pdf`) until it is free.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from schemas.events import Attachment

_FORWARDED = re.compile(r"^\s*(fwd?|fw)\s*:", re.IGNORECASE)
SEPARATOR = "---------- Forwarded message ---------"


def subject(original: str | None, override: str | None = None) -> str:
    if override is not None:
        return override
    if not original or not original.strip():
        return "Fwd: (no subject)"
    return original if _FORWARDED.match(original) else f"Fwd: {original}"


def _date(at: datetime) -> str:
    """Gmail's form: `Tue, Dec 1, 2026 at 8:13 AM` (UTC)."""
    at = at.astimezone(UTC)
    return f"{at:%a, %b} {at.day}, {at.year} at {at.hour % 12 or 12}:{at:%M %p} UTC"


def preamble(row: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The original's headers as the preamble lists them."""
    lines = [
        ("From", row["from_addr"] or ""),
        ("Date", _date(row["sent_at"] or row["created_at"])),
        ("Subject", row["subject"] or ""),
        ("To", ", ".join(row["to_addrs"])),
    ]
    if row["cc_addrs"]:
        lines.append(("Cc", ", ".join(row["cc_addrs"])))
    return lines


def inline_bodies(
    row: Mapping[str, Any], note_text: str | None, note_html: str | None
) -> tuple[str, str | None]:
    """The text and HTML of an inline forward (HTML only when the note or the original has some)."""
    head = preamble(row)
    text_head = "\n".join([SEPARATOR, *(f"{k}: {v}" for k, v in head)])
    text = "\n\n".join(p for p in (note_text, text_head, row["text_body"] or "") if p is not None)
    if note_html is None and row["html_body"] is None:
        return text, None
    html_note = note_html if note_html is not None else html.escape(note_text or "").replace("\n", "<br>\n")
    html_head = "<br>\n".join([SEPARATOR, *(f"{k}: {html.escape(v)}" for k, v in head)])
    original = (
        row["html_body"]
        if row["html_body"] is not None
        else html.escape(row["text_body"] or "").replace("\n", "<br>\n")
    )
    body = f'<div dir="ltr">{html_note}</div><br>\n<div class="gmail_quote">{html_head}<br><br>\n{original}</div>'
    return text, body


def _split(name: str) -> tuple[str, str]:
    stem, dot, ext = name.rpartition(".")
    return (stem, f".{ext}") if dot and stem else (name, "")


def renamed(originals: list[Attachment], callers: list[Attachment]) -> list[Attachment]:
    """The original's files with names free of the caller's and of each other's."""
    taken = {a.filename for a in callers}
    out = []
    for a in originals:
        name = a.filename
        if name in taken:
            stem, ext = _split(name)
            name, n = f"forwarded-{name}", 2
            while name in taken:
                name, n = f"forwarded-{stem}-{n}{ext}", n + 1
        taken.add(name)
        out.append(a.model_copy(update={"filename": name}))
    return out
