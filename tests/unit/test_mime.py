"""MIME building for accepted sends."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy

import pytest

from mail.compose import (
    UnsendableMessage,
    envelope_recipients,
    needs_smtputf8,
    render_message,
    wire_address,
)
from schemas.events import Content, SendAcceptedPayload
from schemas.ids import new_id


def accepted(**content) -> SendAcceptedPayload:
    return SendAcceptedPayload(
        message_id=new_id(),
        conv_id=new_id(),
        mailbox_id=new_id(),
        mailbox_email="s@tryacme.test",
        affinity="new",
        rfc_message_id="<abc@tryacme.test>",
        from_addr="s@tryacme.test",
        to=["m@x.test"],
        content=Content(subject="Hello — ünïcode", **content),
        daily_cap=10,
        remaining=9,
    )


def parse(p: SendAcceptedPayload):
    return message_from_bytes(render_message(p, datetime(2026, 1, 2, tzinfo=UTC)), policy=policy.default)


def test_text_and_html_become_multipart_alternative() -> None:
    """Both bodies: multipart/alternative, plain first, with the threading and identity headers."""
    m = parse(accepted(text="plain", html="<b>rich</b>", in_reply_to="<p@x>", references=["<o@x>", "<p@x>"]))
    assert m.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in m.iter_parts()] == ["text/plain", "text/html"]
    assert m["Subject"] == "Hello — ünïcode" and m["Message-ID"] == "<abc@tryacme.test>"
    assert m["In-Reply-To"] == "<p@x>" and m["References"] == "<o@x> <p@x>"
    assert m["Date"] == "Fri, 02 Jan 2026 00:00:00 +0000"


def test_non_ascii_body_and_subject_survive() -> None:
    """Unicode in the subject and body reaches the recipient intact."""
    m = parse(accepted(text="Grüße, Zoë ✓", html="<p>naïve</p>"))
    assert m["Subject"] == "Hello — ünïcode"
    assert [p.get_content().strip() for p in m.iter_parts()] == ["Grüße, Zoë ✓", "<p>naïve</p>"]


def test_single_body_is_a_single_part() -> None:
    """Only html: one text/html part; only text: one text/plain part."""
    assert parse(accepted(html="<i>x</i>")).get_content_type() == "text/html"
    assert parse(accepted(text="x")).get_content_type() == "text/plain"


def test_bcc_is_in_the_envelope_only() -> None:
    """Bcc recipients receive the message but never appear in its headers; Cc does."""
    p = accepted(text="x", cc=["c@x.test"], bcc=["hidden@x.test"])
    m = parse(p)
    assert b"hidden@x.test" not in render_message(p, datetime.now(UTC))
    assert m["Cc"] == "c@x.test" and m["Bcc"] is None
    assert envelope_recipients(p) == ["m@x.test", "c@x.test", "hidden@x.test"]


def test_long_lines_are_wrapped_for_smtp() -> None:
    """No line of the serialised message exceeds RFC 5322's 998 characters, with CRLF endings."""
    raw = render_message(accepted(text="word " * 2000, html="<p>" + "x" * 5000 + "</p>"), datetime.now(UTC))
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    m = message_from_bytes(raw, policy=policy.default)
    assert [len(p.get_content()) for p in m.iter_parts()] == [10000, 5007]


def test_idn_domains_go_out_as_idna_and_utf8_local_parts_need_smtputf8() -> None:
    p = accepted(text="x", cc=["zoë@bücher.test"]).model_copy(update={"to": ["ana@bücher.test"]})
    m = parse(p)
    assert m["To"] == "ana@xn--bcher-kva.test"
    assert envelope_recipients(p) == ["ana@xn--bcher-kva.test", "zoë@xn--bcher-kva.test"]
    assert needs_smtputf8(envelope_recipients(p)) and not needs_smtputf8(["ana@xn--bcher-kva.test"])
    assert wire_address("a@example.test") == "a@example.test"


@pytest.mark.parametrize("bad", ["S\x0cReply-To : x@evil.test", "S\u2028Bcc: x", "S\x00", "S\tT"])
def test_a_header_value_with_a_control_character_is_unsendable(bad: str) -> None:
    """The API refuses them; an event from anywhere else still cannot add a header line."""
    with pytest.raises(UnsendableMessage):
        render_message(accepted(text="x").model_copy(update={"rfc_message_id": bad}), datetime.now(UTC))
    with pytest.raises(UnsendableMessage):
        render_message(accepted(text="x", references=["<a@b>", bad]), datetime.now(UTC))
