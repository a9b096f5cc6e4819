"""What a forward sends, from the stored original (mail/forward.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mail import forward
from schemas.events import Attachment


@pytest.mark.parametrize(
    ("original", "override", "expected"),
    [
        ("Q3 numbers", None, "Fwd: Q3 numbers"),
        ("Fwd: Q3 numbers", None, "Fwd: Q3 numbers"),
        ("FWD:Q3", None, "FWD:Q3"),
        ("Fw: plan", None, "Fw: plan"),
        ("fw : plan", None, "fw : plan"),
        ("Re: plan", None, "Fwd: Re: plan"),
        ("Fwdx: not a prefix", None, "Fwd: Fwdx: not a prefix"),
        ("", None, "Fwd: (no subject)"),
        ("   ", None, "Fwd: (no subject)"),
        (None, None, "Fwd: (no subject)"),
        ("Q3", "Numbers for you", "Numbers for you"),
    ],
)
def test_subject_never_doubles_fwd(original, override, expected) -> None:
    assert forward.subject(original, override) == expected


def _file(name: str, byte: str = "a") -> Attachment:
    return Attachment(sha256=byte * 64, size=1, content_type="application/pdf", filename=name)


def test_the_callers_files_keep_their_names_and_colliding_originals_are_renamed() -> None:
    callers = [_file("report.pdf"), _file("forwarded-report.pdf")]
    originals = [_file("report.pdf", "b"), _file("report.pdf", "c"), _file("notes", "d"), _file("notes", "e")]
    names = [a.filename for a in forward.renamed(originals, callers)]
    assert names == ["forwarded-report-2.pdf", "forwarded-report-3.pdf", "notes", "forwarded-notes"]
    assert [a.sha256[0] for a in forward.renamed(originals, callers)] == ["b", "c", "d", "e"]


ROW = {
    "from_addr": "ana@example.test", "sent_at": None, "created_at": datetime(2026, 12, 1, 14, 5, tzinfo=UTC),
    "subject": "Q3 <numbers>", "to_addrs": ["desk@agents.example.test"], "cc_addrs": ["bo@example.test"],
    "text_body": "See attached.\nAna", "html_body": None,
}  # fmt: skip


def test_inline_bodies_carry_the_note_the_preamble_and_the_original() -> None:
    text, html = forward.inline_bodies(ROW, "FYI", None)
    assert text == (
        "FYI\n\n---------- Forwarded message ---------\nFrom: ana@example.test\n"
        "Date: Tue, Dec 1, 2026 at 2:05 PM UTC\nSubject: Q3 <numbers>\nTo: desk@agents.example.test\n"
        "Cc: bo@example.test\n\nSee attached.\nAna"
    )
    assert html is None  # neither side has HTML

    _, html = forward.inline_bodies({**ROW, "cc_addrs": []}, None, "<b>FYI</b>")
    assert html.startswith('<div dir="ltr"><b>FYI</b></div>')
    assert "Subject: Q3 &lt;numbers&gt;<br>" in html and "Cc:" not in html
    assert html.endswith("See attached.<br>\nAna</div>")  # a text original, escaped into the HTML
