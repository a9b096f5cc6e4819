"""Webhooks, the pure parts: signatures, the retry policy, payloads, and the SSRF guard."""

from __future__ import annotations

import ipaddress
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook

from schemas.events import (
    Content,
    MessageSent,
    MessageSentPayload,
    MessageSummary,
    SendAccepted,
    SendAcceptedPayload,
    SendRejected,
    SendRejectedPayload,
    SmtpReply,
)
from schemas.webhooks import body, carries_message, message_data, subscribed_name, webhook_type
from services.common.domain.webhooks.signing import headers, new_secret, signature_header
from services.common.egress import Egress, GuardedResolver, UnsafeDestination
from services.webhooks.policy import after_attempt, retry_after

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
SCHEDULE = [5, 300, 1800]


def test_signature_matches_the_standard_webhooks_test_vector() -> None:
    # The example of the Standard Webhooks specification and its reference libraries.
    header = signature_header(
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        '{"test": 2432232314}',
        ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )
    assert header == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_each_secret_signs_and_each_verifies() -> None:
    old, new = new_secret(), new_secret()
    assert old != new and old.startswith("whsec_")
    payload = '{"type":"message.sent"}'
    h = headers("whd_1", int(datetime.now(UTC).timestamp()), payload, [new, old])
    assert len(h["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(payload, h) == {"type": "message.sent"}
    with pytest.raises(Exception, match="signature"):
        Webhook(new_secret()).verify(payload, h)


@pytest.mark.parametrize(
    ("status", "attempt", "state", "wait_s"),
    [
        (200, 1, "delivered", None),
        (204, 3, "delivered", None),
        (500, 1, "pending", 5),
        (None, 2, "pending", 300),  # timeout or connection error
        (302, 1, "pending", 5),  # redirects are failures, never followed
        (500, 3, "pending", 1800),
        (500, 4, "failed", None),  # the schedule is used up
    ],
)
def test_after_attempt_follows_the_schedule(status, attempt, state, wait_s) -> None:
    step = after_attempt(status, attempt, NOW, SCHEDULE, jitter=0)
    assert step.state == state and step.disable is None
    assert step.next_attempt_at == (NOW + timedelta(seconds=wait_s) if wait_s else None)


def test_gone_disables_and_retry_after_is_honoured() -> None:
    gone = after_attempt(410, 1, NOW, SCHEDULE)
    assert gone.state == "failed" and "410" in gone.disable
    throttled = after_attempt(429, 1, NOW, SCHEDULE, retry_after_s=120, jitter=0)
    assert throttled.next_attempt_at == NOW + timedelta(seconds=120)
    capped = after_attempt(503, 1, NOW, SCHEDULE, retry_after_s=10**9, jitter=0)
    assert capped.next_attempt_at == NOW + timedelta(seconds=max(SCHEDULE))
    assert retry_after("30", NOW) == 30
    assert retry_after("Sun, 22 Nov 2026 12:01:00 GMT", NOW) == 60
    assert retry_after("soon", NOW) is None


def _sent(**summary) -> MessageSent:
    return MessageSent(
        org_id=uuid.uuid4(),
        identity_id=uuid.uuid4(),
        payload=MessageSentPayload(
            message_id=uuid.uuid4(), mailbox_id=uuid.uuid4(), rfc_message_id="<a@b>", relay="r:25",
            reply=SmtpReply(code=250, message="OK"), summary=MessageSummary(**summary) if summary else None,
        ),
    )  # fmt: skip


def test_message_sent_data_is_the_message_as_the_identities_dialect_shows_it() -> None:
    conv = uuid.uuid4()
    event = _sent(conv_id=conv, from_addr="a@x.test", to=["b@y.test"], subject="Hi", mailbox_email="a@x.test")
    data = message_data(event, None, {event.identity_id: "agent@x.test"})
    assert data == {
        "messageId": f"msg_{event.payload.message_id.hex}",
        "id": "<a@b>",
        "convId": f"conv_{conv.hex}",
        "identity": "agent@x.test",
        "direction": "outbound",
        "status": "sent",
        "from": "a@x.test",
        "to": ["b@y.test"],
        "subject": "Hi",
        "account": {"id": f"acc_{event.payload.mailbox_id.hex}", "email": "a@x.test"},
        "smtp": {"code": 250, "message": "OK"},
    }
    text = body("message.sent", event.occurred_at, data)
    assert json.loads(text)["type"] == "message.sent" and json.loads(text)["timestamp"].endswith("Z")


def test_what_the_event_lacks_comes_from_the_stored_message() -> None:
    event = _sent()  # an event written before outcomes carried their summary
    assert not carries_message(event)
    assert carries_message(
        _sent(
            conv_id=uuid.uuid4(), from_addr="a@x.test", to=["b@y.test"], subject="", mailbox_email="a@x.test"
        )
    )
    stored = {"conv_id": uuid.uuid4(), "subject": "Stored", "mailbox_email": "m@x.test", "status": "queued"}
    data = message_data(event, stored, {})
    assert data["subject"] == "Stored" and data["account"]["email"] == "m@x.test"
    assert data["status"] == "sent"  # the event's own facts win


def test_which_events_become_which_webhooks() -> None:
    rejected = SendRejected(
        org_id=uuid.uuid4(),
        payload=SendRejectedPayload(
            message_id=uuid.uuid4(),
            conv_id=None,
            to=["x@y.test"],
            reason="cap_exceeded",
            daily_cap=1,
            remaining=0,
        ),
    )
    assert webhook_type(_sent()) == "message.sent"
    assert webhook_type(rejected) == "message.rejected"
    assert message_data(rejected, None, {})["reason"] == "cap_exceeded"
    accepted = SendAccepted(
        org_id=uuid.uuid4(),
        payload=SendAcceptedPayload(
            message_id=uuid.uuid4(), conv_id=uuid.uuid4(), mailbox_id=uuid.uuid4(), mailbox_email="a@x.test",
            affinity="new", rfc_message_id="<x@y>", from_addr="a@x.test", to=["b@y.test"], content=Content(),
            daily_cap=1, remaining=0,
        ),
    )  # fmt: skip
    assert webhook_type(accepted) is None  # internal step, not a webhook
    assert subscribed_name(["message.sent"], "message.sent") == "message.sent"
    assert subscribed_name(["email.sent"], "message.sent") == "email.sent"
    assert subscribed_name(["message.failed"], "message.sent") is None


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("ff02::1", False),
        # IPv6 forms that embed an IPv4 address are judged as that address
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("64:ff9b::808:808", True),  # NAT64 of 8.8.8.8
        ("64:ff9b:1::a00:1", False),  # local-use NAT64
        ("2002:a00:1::", False),  # 6to4 of 10.0.0.1
        ("::10.0.0.1", False),  # IPv4-compatible
        ("::ffff:0:a00:1", False),  # IPv4-translated
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
        ("::ffff:8.8.8.8", True),
        # special-purpose ranges the standard library's tables may miss
        ("192.0.0.192", False),
        ("198.18.0.1", False),
        ("100::1", False),
        ("2001:db8::1", False),
    ],
)
def test_only_public_unicast_addresses_are_permitted(address: str, allowed: bool) -> None:
    assert Egress().permits(ipaddress.ip_address(address)) is allowed


def test_an_allowed_network_is_permitted() -> None:
    egress = Egress(["127.0.0.0/8"])
    assert egress.permits(ipaddress.ip_address("127.0.0.1"))
    assert not egress.permits(ipaddress.ip_address("10.0.0.1"))


@pytest.mark.parametrize(
    "url",
    [" http://8.8.8.8/h", "http://8.8.8.8/h ", "http://8.8.8.8:0/h", "http://8.8.8.8\\@127.0.0.1/", "http://8.8.8.8/a b",
     "ftp://8.8.8.8/", "http:///h"],
)  # fmt: skip
async def test_url_shapes_that_can_never_deliver_are_refused(url: str) -> None:
    with pytest.raises(UnsafeDestination):
        await Egress().check_url(url)


async def test_the_resolver_refuses_what_the_egress_rules_refuse() -> None:
    """At delivery the client resolves through the guard: a name that now points inside is refused."""
    strict = GuardedResolver(Egress())
    with pytest.raises(UnsafeDestination):
        await strict.resolve("localhost", 80)
    await strict.close()
    allowing = GuardedResolver(Egress(["127.0.0.0/8"]))
    assert [r["host"] for r in await allowing.resolve("localhost", 80)] == ["127.0.0.1"]
    await allowing.close()
