"""Delivery status notifications and feedback reports as real MTAs and mailbox providers write them
(mail/reports.py)."""

from __future__ import annotations

from email import message_from_bytes, policy

from mail.reports import read_report
from services.common.domain.receiving.intake import unmatched


def dsn(original_id: str, blocks: str, original: str = "text/rfc822-headers") -> bytes:
    """A bounce as Postfix builds one: notification, delivery report, the undelivered message's headers."""
    return f"""From: MAILER-DAEMON@mx.example.test (Mail Delivery System)
To: sender0@tryacme.test
Subject: Undelivered Mail Returned to Sender
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="4F2B3C.1764565200/mx.example.test"
Message-Id: <20261201050000.4F2B3C@mx.example.test>

This is a MIME-encapsulated message.

--4F2B3C.1764565200/mx.example.test
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.test.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

--4F2B3C.1764565200/mx.example.test
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.test
X-Postfix-Queue-ID: 4F2B3C
X-Postfix-Sender: rfc822; sender0@tryacme.test
Arrival-Date: Tue,  1 Dec 2026 05:00:00 +0000 (UTC)

{blocks}
--4F2B3C.1764565200/mx.example.test
Content-Description: Undelivered Message Headers
Content-Type: {original}

From: sender0@tryacme.test
To: gone@example.test, kept@example.test
Subject: Intro
Message-ID: {original_id}
Date: Tue, 01 Dec 2026 04:59:59 +0000

--4F2B3C.1764565200/mx.example.test--
""".replace("\n", "\r\n").encode()


FAILED = """Final-Recipient: rfc822; gone@example.test
Original-Recipient: rfc822;gone@example.test
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx2.example.test
Diagnostic-Code: smtp; 550 5.1.1 <gone@example.test>: Recipient address rejected:
    User unknown in virtual mailbox table
"""
DELAYED = """Final-Recipient: rfc822; slow@example.test
Action: delayed
Status: 4.4.1
Diagnostic-Code: X-Postfix; connect to mx.slow.example.test[192.0.2.1]:25: Connection timed out
"""


def test_a_bounce_names_the_original_and_the_failed_recipient_only() -> None:
    report = read_report(message_from_bytes(dsn("<abc@tryacme.test>", FAILED), policy=policy.default))
    assert report is not None and report.kind == "delivery-status"
    assert report.original_message_id == "<abc@tryacme.test>"
    [r] = report.recipients
    assert (r.recipient, r.outcome, r.status) == ("gone@example.test", "failed", "5.1.1")
    assert r.diagnostic.startswith("550 5.1.1 <gone@example.test>: Recipient address rejected: User unknown")


def test_delays_and_several_recipients_and_an_attached_original() -> None:
    raw = dsn("<abc@tryacme.test>", FAILED + "\n" + DELAYED, original="message/rfc822")
    report = read_report(message_from_bytes(raw, policy=policy.default))
    assert report.original_message_id == "<abc@tryacme.test>"
    assert [(r.recipient, r.outcome, r.status) for r in report.recipients] == [
        ("gone@example.test", "failed", "5.1.1"),
        ("slow@example.test", "delayed", "4.4.1"),
    ]


def arf(original_id: str) -> bytes:
    """A complaint as mailbox providers send one (RFC 5965)."""
    return f"""From: <staff@isp.example.test>
To: <fbl@tryacme.test>
Subject: FW: Intro
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="part1_13d.2e68ed54_boundary"

--part1_13d.2e68ed54_boundary
Content-Type: text/plain; charset="US-ASCII"

This is an email abuse report for an email message received from IP 192.0.2.7.

--part1_13d.2e68ed54_boundary
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1
Original-Mail-From: <sender0@tryacme.test>
Original-Rcpt-To: <kept@example.test>
Arrival-Date: Tue, 1 Dec 2026 05:00:00 +0000
Reported-Domain: tryacme.test
Source-IP: 192.0.2.7

--part1_13d.2e68ed54_boundary
Content-Type: message/rfc822
Content-Disposition: inline

From: <sender0@tryacme.test>
To: <kept@example.test>
Subject: Intro
Message-ID: {original_id}

Hello.
--part1_13d.2e68ed54_boundary--
""".replace("\n", "\r\n").encode()


def test_a_feedback_report_names_the_complaining_recipient() -> None:
    report = read_report(message_from_bytes(arf("<k1@tryacme.test>"), policy=policy.default))
    assert report is not None and report.kind == "feedback-report"
    assert report.original_message_id == "<k1@tryacme.test>"
    assert [(r.recipient, r.outcome) for r in report.recipients] == [("kept@example.test", "complained")]


def test_ordinary_mail_and_out_of_office_replies_are_no_reports() -> None:
    ooo = b"From: a@example.test\r\nAuto-Submitted: auto-replied\r\nSubject: Out of office\r\n\r\nBack Monday.\r\n"
    assert read_report(message_from_bytes(ooo, policy=policy.default)) is None


def test_a_report_counts_only_for_recipients_the_message_went_to_back_at_the_mailbox_that_sent_it() -> None:
    blocks = FAILED + "\n" + FAILED.replace("gone@example.test", "ana@xn--bcher-kva.example")
    report = read_report(message_from_bytes(dsn("<abc@tryacme.test>", blocks), policy=policy.default))
    assert report is not None
    original = {
        "mailbox_email": "sender0@tryacme.test", "handle": "agent@example.test",
        "recipients": ["ana@bücher.example", "kept@example.test"],
    }  # fmt: skip
    assert unmatched(report, original, ["sender0@tryacme.test"]) == {
        "gone@example.test": "the message was not sent to this address"
    }
    assert unmatched(report, original, ["AGENT@example.test."]) == {
        "gone@example.test": "the message was not sent to this address"
    }  # the identity's handle takes its mail too
    elsewhere = unmatched(report, original, ["other@tryacme.test"])
    assert set(elsewhere) == {"gone@example.test", "ana@xn--bcher-kva.example"}
    assert elsewhere["gone@example.test"].startswith("the report came to other@tryacme.test")
