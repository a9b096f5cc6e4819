"""Reading received mail (services/common/receiving/parse.py): what it says, and nothing it could break."""

from __future__ import annotations

from email.message import EmailMessage

from services.common.receiving.parse import parse


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
