"""Reading received mail (mail/parse.py): what it says, and nothing it could break."""

from __future__ import annotations

import time
from email.message import EmailMessage

import pytest

from mail.parse import Limits, Unacceptable, one_line, parse, storable, unique


def test_a_reply_is_read_with_its_threading_bodies_and_files() -> None:
    m = EmailMessage()
    m["From"] = "Zoë Ana <ana@example.test>"
    m["To"] = "desk@agents.example.test, other@example.test"
    m["Cc"] = "boss@example.test"
    m["Subject"] = "Re: Pilot — next steps"
    m["Message-ID"] = "<r1@client.example.test>"
    m["In-Reply-To"] = "<o2@agents.example.test>"
    m["References"] = "<o1@agents.example.test> <o2@agents.example.test>"
    m.set_content("Yes.")
    m.add_alternative("<p>Yes.</p>", subtype="html")
    m.add_attachment(b"\x89PNG...", maintype="image", subtype="png", filename="Grüße.png")
    p = parse(m.as_bytes())
    assert (p.rfc_message_id, p.from_addr, p.subject) == (
        "<r1@client.example.test>",
        "ana@example.test",
        "Re: Pilot — next steps",
    )
    assert p.to == ["desk@agents.example.test", "other@example.test"] and p.cc == ["boss@example.test"]
    assert (p.text.strip(), p.html.strip()) == ("Yes.", "<p>Yes.</p>")
    assert p.answers == ["<o2@agents.example.test>", "<o2@agents.example.test>", "<o1@agents.example.test>"]
    assert [(f.filename, f.content_type, f.data) for f in p.files] == [
        ("Grüße.png", "image/png", b"\x89PNG...")
    ]
    assert not p.auto_reply


def test_the_reply_text_leaves_out_quoted_history_and_signature() -> None:
    m = EmailMessage()
    m["From"], m["Subject"] = "ana@example.test", "Re: Pilot"
    m.set_content(
        "Monday works for us.\n\n-- \nAna Lima\nHead of Ops\n\n"
        "On Mon, 30 Nov 2026 at 10:00, Desk <desk@agents.example.test> wrote:\n> Shall we start?\n> Best\n"
    )
    p = parse(m.as_bytes())
    assert p.reply_text == "Monday works for us."
    assert "Shall we start?" in p.text  # the whole text is kept too


def test_broken_headers_read_as_absent_and_a_message_id_is_derived() -> None:
    raw = b"From: not an address\r\nSubject: a\r\n\tfolded\x01 subject\r\nIn-Reply-To: garbage\r\n\r\nbody\x00text\r\n"
    p = parse(raw, envelope_from="bounce@example.test")
    assert p.from_addr == "bounce@example.test"  # the envelope sender, when From names no address
    assert (
        p.rfc_message_id.endswith("@received.sendstream>") and p.rfc_message_id == parse(raw).rfc_message_id
    )
    assert "\x01" not in p.subject and "\n" not in p.subject
    assert p.in_reply_to is None and p.references == [] and p.to == []
    assert p.text == "bodytext\n"


def test_auto_replies_are_recognised() -> None:
    for header, value in (
        ("Auto-Submitted", "auto-replied"),
        ("X-Autoreply", "yes"),
        ("Precedence", "auto_reply"),
    ):
        m = EmailMessage()
        m["From"], m["Subject"], m[header] = "a@example.test", "Out of office", value
        m.set_content("Back Monday.")
        assert parse(m.as_bytes()).auto_reply, header
    m = EmailMessage()
    m["From"], m["Auto-Submitted"] = "a@example.test", "no"
    assert not parse(m.as_bytes()).auto_reply


# --- bytes from strangers, made storable at the door (issue 23) ------------------------------------


def test_storable_reads_undecoded_bytes_as_utf8_and_replaces_nul_and_lone_surrogates() -> None:
    assert storable("jos\udcc3\udca9") == "jos\u00e9"  # the email package's escapes of UTF-8 bytes
    assert storable("a\udcffb") == "a\ufffdb"  # a byte that is no UTF-8
    assert storable("a\ud800b\x00c") == "a\ufffdb\ufffdc"
    assert storable("plain\ntext") == "plain\ntext"
    assert one_line("a\r\nSet-Cookie: x\x85y", 100) == "a Set-Cookie: x y"
    assert one_line("x" * 50, 10) == "x" * 10


def _stored_anywhere(p) -> list[str]:
    strings = [p.rfc_message_id, p.from_addr, *p.to, *p.cc, p.subject, p.text or "", p.html or "",
               p.in_reply_to or "", *p.references, p.reply_text or "", p.reply_to or ""]  # fmt: skip
    return strings + [s for f in p.files for s in (f.filename, f.content_type)]


def test_names_addresses_and_headers_from_strangers_are_storable() -> None:
    raw = (
        b"From: Jos\xc3\xa9 <jos\xc3\xa9@example.test>\r\nTo: a\x00b@example.test, \xff@example.test\r\n"
        b"Subject: =?utf-8?q?a=00b=0D=0AX-Evil:_1?= \xed\xa0\x80\r\nMessage-ID: <a\x00b@x>\r\n"
        b"References: <" + b"r" * 600 + b"@x> <ok@x>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nhi\x00 \xc3\xa9\r\n'
        b"--B\r\nContent-Disposition: attachment; filename*=utf-8''a%00b%0D%0A.txt\r\n\r\nx\r\n"
        b'--B\r\nContent-Disposition: attachment; filename="../../etc/passwd"\r\n\r\ny\r\n--B--\r\n'
    )
    p = parse(raw)
    assert p.from_addr == "jos\u00e9@example.test"
    assert p.subject == "a\ufffdb X-Evil: 1 \ufffd\ufffd\ufffd"
    assert p.rfc_message_id == "<a\ufffdb@x>" and p.references == ["<ok@x>"]
    assert p.text.startswith("hi \u00e9")
    assert [f.filename for f in p.files] == ["a\ufffdb .txt", ".._.._etc_passwd"]
    for s in _stored_anywhere(p):
        s.encode("utf-8")  # no surrogate left
        assert "\x00" not in s


def test_files_of_one_name_are_named_apart() -> None:
    assert unique(["report.pdf", "REPORT.pdf", "report.pdf", "report-2.pdf", "notes", "notes"]) == [
        "report.pdf", "REPORT-2.pdf", "report-3.pdf", "report-2-2.pdf", "notes", "notes-2",
    ]  # fmt: skip


def test_a_structure_beyond_the_limits_is_refused_for_good() -> None:
    def nested(depth: int) -> bytes:
        opening = "".join(
            f"Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n" for i in range(depth)
        )
        closing = "".join(f"\r\n--b{i}--" for i in reversed(range(depth)))
        return ("From: a@x.test\r\n" + opening + "Content-Type: text/plain\r\n\r\nin" + closing).encode()

    assert parse(nested(32)).text.startswith("in")
    for raw in (nested(33), nested(3000)):
        with pytest.raises(Unacceptable) as refused:
            parse(raw)
        assert refused.value.reply.startswith("554 5.6.0") and "nested" in refused.value.reason
    headers = b"".join(b"X-%d: x\r\n" % i for i in range(11))
    with pytest.raises(Unacceptable, match="more than 10 fields"):
        parse(headers + b"\r\nbody", limits=Limits(header_fields=10))
    parts = b"".join(b"--B\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(3))
    with pytest.raises(Unacceptable, match="more than 3 MIME parts"):
        parse(
            b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n' + parts + b"--B--", limits=Limits(parts=3)
        )


def test_a_huge_header_is_read_in_part_quickly_and_more_than_a_mebibyte_of_headers_refused() -> None:
    """Subjects of 60,000 and 100,000 encoded words (the email package's parser took gigabytes on one)."""
    started = time.perf_counter()
    p = parse(b"From: a@x.test\r\nSubject: " + b"=?utf-8?q?a?= " * 60_000 + b"\r\n\r\nhi")
    assert 0 < len(p.subject) <= 1000
    with pytest.raises(Unacceptable, match="headers take more than"):
        parse(b"From: a@x.test\r\nSubject: " + b"=?utf-8?q?a?= " * 100_000 + b"\r\n\r\nhi")
    assert time.perf_counter() - started < 2
