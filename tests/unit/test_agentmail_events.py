"""The AgentMail dialect's event bodies (its webhooks and WebSocket frames) validate as AgentMail's own SDK
models: the SDK picks a WebSocket frame's class by which model validates first, so a body missing a field
it requires would be read as the wrong event."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from agentmail import (
    MessageBouncedEvent,
    MessageComplainedEvent,
    MessageDeliveredEvent,
    MessageReceivedEvent,
    MessageRejectedEvent,
    MessageSentEvent,
)

from schemas.api.agentmail import DIALECT
from schemas.events import (
    ArrivedMessage,
    BlobRef,
    Content,
    MessageBounced,
    MessageComplained,
    MessageDelivered,
    MessageReceived,
    MessageReceivedPayload,
    MessageSent,
    MessageSentPayload,
    MessageSummary,
    RecipientStatus,
    SendRejected,
    SendRejectedPayload,
    SmtpReply,
)
from schemas.webhooks import dialect_body, webhook_type

INBOX, MESSAGE, CONV = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
HANDLES = {INBOX: "desk@inboxes.example.test"}
FMT = DIALECT.webhook_format
assert FMT is not None


def shown(event, stored=None, thread=None) -> dict:
    text = dialect_body(FMT, webhook_type(event), event, stored, HANDLES, thread)
    assert text is not None
    return json.loads(text)


def status(kind, recipient="ana@example.test", code="5.1.1"):
    return kind(org_id=uuid.uuid4(), identity_id=INBOX, payload=RecipientStatus(message_id=MESSAGE, recipient=recipient, status=code))


SENT = MessageSent(
    org_id=uuid.uuid4(), identity_id=INBOX,
    payload=MessageSentPayload(
        message_id=MESSAGE, mailbox_id=uuid.uuid4(), rfc_message_id="<a@b>", relay="r:25", reply=SmtpReply(code=250, message="OK"),
        summary=MessageSummary(conv_id=CONV, from_addr="desk@inboxes.example.test", to=["ana@example.test"], subject="Hi",
                               mailbox_email="desk@inboxes.example.test", dialect="agentmail"),
    ),
)  # fmt: skip

REJECTED = SendRejected(
    org_id=uuid.uuid4(), identity_id=INBOX,
    payload=SendRejectedPayload(
        message_id=MESSAGE, conv_id=CONV, to=["ana@example.test"], reason="suppressed", daily_cap=1, remaining=0
    ),
)  # fmt: skip


@pytest.mark.parametrize(
    ("event", "model", "key"),
    [
        (SENT, MessageSentEvent, "send"),
        (status(MessageDelivered, code="2.0.0"), MessageDeliveredEvent, "delivery"),
        (status(MessageBounced), MessageBouncedEvent, "bounce"),
        (status(MessageComplained), MessageComplainedEvent, "complaint"),
        (REJECTED, MessageRejectedEvent, "reject"),
    ],
)
def test_each_outcome_validates_as_the_sdks_own_event(event, model, key) -> None:
    body = shown(event, {"conv_id": CONV, "to_addrs": ["ana@example.test"]})
    parsed = model.model_validate(body)
    named = getattr(parsed, key)
    assert (named.inbox_id, named.message_id) == ("desk@inboxes.example.test", f"msg_{MESSAGE.hex}")
    assert body["type"] == "event" and body["event_type"] == webhook_type(event)


def test_a_received_message_carries_the_message_and_its_thread() -> None:
    received = MessageReceived(
        org_id=uuid.uuid4(), identity_id=INBOX,
        payload=MessageReceivedPayload(
            message_id=MESSAGE, conv_id=CONV, mailbox_id=uuid.uuid4(), mailbox_email="desk@inboxes.example.test",
            new_conversation=True,
            message=ArrivedMessage(
                message_id=MESSAGE, rfc_message_id="<r@x>", from_addr="lee@example.test", to=["desk@inboxes.example.test"],
                recipients=["desk@inboxes.example.test"], content=Content(subject="Quote", text="How much?"),
                raw=BlobRef(sha256="0" * 64, size=10, content_type="message/rfc822"),
            ),
        ),
    )  # fmt: skip
    body = shown(received, {"created_at": datetime.now(UTC), "updated_at": datetime.now(UTC)})
    parsed = MessageReceivedEvent.model_validate(body)
    assert parsed.message.from_ == "lee@example.test" and parsed.message.text == "How much?"
    assert parsed.thread.thread_id == parsed.message.thread_id and parsed.thread.message_count == 1
    assert "received" in parsed.message.labels


def test_drafts_and_other_dialects_events_have_no_agentmail_body() -> None:
    assert FMT.body("message.failed", SENT, {}, HANDLES, None) is None


def test_a_forward_is_agentmails_message_sent() -> None:
    """AgentMail has no event for a forward: its MessageSent is `message.sent` to AgentMail's endpoints."""
    summary = SENT.payload.summary.model_copy(update={"forwarded": True})
    forward = SENT.model_copy(update={"payload": SENT.payload.model_copy(update={"summary": summary})})
    assert webhook_type(forward) == "message.forwarded" and FMT.name_of(webhook_type(forward)) == "message.sent"
    body = json.loads(dialect_body(FMT, FMT.name_of(webhook_type(forward)), forward, None, HANDLES))
    assert MessageSentEvent.model_validate(body).send.message_id == f"msg_{MESSAGE.hex}"
