"""Sender rules judge every sender a message names, however its domain is spelled
(mail/rules.py), and the intake finds every one of them (parse.py)."""

from __future__ import annotations

from mail.parse import parse
from mail.rules import matches, normalised, refusal

BLOCK = [("blocked.test", "block")]


def test_a_domain_is_the_same_domain_in_any_case_with_a_trailing_dot_or_in_unicode() -> None:
    assert normalised("X@Blocked.Test.") == "x@blocked.test"
    assert normalised("ana@BÜCHER.example") == "ana@xn--bcher-kva.example"
    assert matches("blocked.test", "x@mail.blocked.test.")
    assert matches("xn--bcher-kva.example", "ana@bücher.example")
    assert matches("bücher.example", "ana@xn--bcher-kva.example.")
    assert not matches("blocked.test", "x@notblocked.test")


def test_any_blocked_sender_refuses_the_message_and_names_itself() -> None:
    assert refusal(BLOCK, ["ok@fine.test", "x@blocked.test."]) == (True, "blocked.test", "x@blocked.test.")
    assert refusal(BLOCK, "ok@fine.test") == (False, None, None)
    allow = [("fine.test", "allow")]
    assert refusal(allow, ["ok@fine.test", "eve@other.test"]) == (True, None, "eve@other.test")
    assert refusal(allow, ["", "ok@fine.test"]) == (False, None, None)  # the null sender of reports


def test_every_from_mailbox_and_sender_are_senders_even_where_the_strict_parser_refuses_them() -> None:
    raw = b"From: ok@fine.test, x@blocked.test\r\nFrom: y@blocked.test.\r\nSender: s@list.test\r\n\r\nhi"
    assert parse(raw).senders == ["ok@fine.test", "x@blocked.test", "s@list.test", "y@blocked.test."]
    display = (
        b'From: "x@blocked.test" <ok@fine.test>\r\n\r\nhi'  # a name that looks like an address is a name
    )
    assert parse(display).senders == ["ok@fine.test"]
