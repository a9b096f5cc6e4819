"""Reports about mail we sent: delivery status notifications (RFC 3464) and feedback reports (RFC 5965,
ARF), read with the standard `email` package. Pure.

Both are `multipart/report`: a human part, a machine part (`message/delivery-status`: one block per
recipient with its Action and Status; `message/feedback-report`: Feedback-Type, Original-Rcpt-To),
and the original message or its headers (`message/rfc822`, `text/rfc822-headers`), whose Message-ID
names the message of ours it is about.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import message_from_string, policy
from email.message import EmailMessage, Message
from typing import Literal

_MSG_ID = re.compile(r"<[^<>\s]+>")
_STATUS = re.compile(r"\b([245])\.\d{1,3}\.\d{1,3}\b")


@dataclass(frozen=True)
class RecipientReport:
    recipient: str
    outcome: Literal["failed", "delayed", "delivered", "complained"]
    status: str  # RFC 3463 enhanced status code, e.g. 5.1.1 ("" for a complaint)
    diagnostic: str


@dataclass(frozen=True)
class Report:
    kind: Literal["delivery-status", "feedback-report"]
    original_message_id: str | None
    recipients: list[RecipientReport]


def _blocks(part: Message) -> list[Message]:
    """The header blocks of a machine-readable part, however the parser presented it."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    text = payload if isinstance(payload, str) else ""
    return [
        message_from_string(block, policy=policy.default) for block in re.split(r"\r?\n\r?\n", text.strip())
    ]


def _value(block: Message, name: str) -> str:
    value = block.get(name)
    return re.sub(r"\s+", " ", str(value)).strip() if value is not None else ""


def _address(field: str) -> str:
    """`rfc822; ana@example.test` -> `ana@example.test`."""
    return field.partition(";")[2].strip().strip("<>") if ";" in field else field.strip().strip("<>")


def _original_id(report: EmailMessage) -> tuple[str | None, list[str]]:
    """The original's Message-ID and To addresses, from its attached copy or headers."""
    for part in report.iter_parts():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            original = payload[0] if isinstance(payload, list) and payload else None
        elif kind == "text/rfc822-headers":
            original = message_from_string(part.get_content(), policy=policy.default)
        else:
            continue
        if original is None:
            continue
        ids = _MSG_ID.findall(str(original.get("Message-ID", "")))
        to = [a.strip().strip("<>") for a in str(original.get("To", "")).split(",") if "@" in a]
        return (ids[0] if ids else None), to
    return None, []


def _delivery(part: Message) -> list[RecipientReport]:
    out = []
    for block in _blocks(part)[1:] or _blocks(part):  # the first block is the per-message one
        recipient = _address(_value(block, "Final-Recipient") or _value(block, "Original-Recipient"))
        if "@" not in recipient:
            continue
        action, status = _value(block, "Action").lower(), _value(block, "Status")
        code = _STATUS.search(status)
        klass = code.group(1) if code else ""
        if action == "failed" or (not action and klass == "5"):
            outcome = "failed"
        elif action == "delayed" or klass == "4":
            outcome = "delayed"
        elif action in ("delivered", "relayed", "expanded"):
            outcome = "delivered"
        else:
            continue
        diagnostic = _value(block, "Diagnostic-Code").partition(";")[2].strip() or _value(
            block, "Diagnostic-Code"
        )
        out.append(
            RecipientReport(recipient.lower(), outcome, code.group(0) if code else status, diagnostic[:500])
        )
    return out


def _feedback(part: Message, original_to: list[str]) -> list[RecipientReport]:
    blocks = _blocks(part)
    block = blocks[0] if blocks else Message()
    kind = _value(block, "Feedback-Type") or "abuse"
    recipients = (
        [_address(_value(block, "Original-Rcpt-To"))] if _value(block, "Original-Rcpt-To") else original_to
    )
    return [
        RecipientReport(r.lower(), "complained", "", f"feedback report: {kind}")
        for r in recipients
        if "@" in r
    ]


def read_report(msg: EmailMessage) -> Report | None:
    """The report `msg` is, or None if it is no delivery or feedback report."""
    if msg.get_content_type() != "multipart/report":
        return None
    kind = str(msg.get_param("report-type", "")).lower()
    if kind not in ("delivery-status", "feedback-report"):
        return None
    try:
        original_id, original_to = _original_id(msg)
        machine = next((p for p in msg.iter_parts() if p.get_content_type() == f"message/{kind}"), None)
        if machine is None:
            return None
        recipients = _delivery(machine) if kind == "delivery-status" else _feedback(machine, original_to)
    except (ValueError, TypeError, LookupError, AttributeError):
        return None
    return Report(kind, original_id, recipients)  # type: ignore[arg-type]
