"""Dispatch outcomes on the wire: deferral and retry (4xx), permanent failure (5xx), giving up."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from devstack.infra import free_port
from tests.conftest import Api, Relay, _RecordingHandler, eventually, through
from tests.integration.test_send import make_identity

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def send_one(api: Api, relay: Relay) -> dict:
    handle, _ = await make_identity(api, relay)
    status, body, _ = await api.call(
        "POST",
        f"/v1/identities/{handle}/send",
        {"to": "morgan@example.test", "subject": "Hello", "text": "Hi"},
    )
    assert status == 202, body
    return {**body["messages"][0], "handle": handle}


async def message_state(api: Api, sent: dict, status: str) -> dict | None:
    code, conv, _ = await api.call("GET", f"/v1/conversations/{sent['convId']}")
    if code != 200 or conv["messages"][0]["status"] != status:
        return None
    return conv["messages"][0]


async def trail(api: Api, message: dict) -> list[str]:
    """The message's audit trail so far: none while the archive, a moment behind the views, has no event of it (404)."""
    status, events, _ = await api.call("GET", f"/v1/messages/{message['messageId']}/events")
    return [e["type"] for e in events["data"]] if status == 200 else []


async def test_451_then_250_is_deferred_then_delivered_once(api: Api, relay: Relay) -> None:
    """A temporary refusal defers the send; the durable retry delivers it exactly once, same Message-ID."""
    relay.replies = ["451 4.7.1 Greylisted, try again later"]
    sent = await send_one(api, relay)
    [got] = await relay.wait_for(1)
    assert got.message["Message-ID"] == sent["id"]
    msg = await eventually(lambda: message_state(api, sent, "sent"))
    assert await eventually(lambda: _has(api, msg, "MessageSent"))
    types = await trail(api, msg)
    assert types == ["SendRequested", "SendAccepted", "DispatchDeferred", "DispatchRetryDue", "MessageSent"]
    assert len(await relay.before_marker(through(api, sent["handle"]))) == 1


async def _has(api: Api, msg: dict, event_type: str) -> bool:
    return event_type in await trail(api, msg)


async def test_550_fails_at_once_without_retry(api: Api, relay: Relay) -> None:
    """A permanent refusal fails the message with the relay's reply and is never retried."""
    relay.replies = ["550 5.1.1 No such user"]
    sent = await send_one(api, relay)
    msg = await eventually(lambda: message_state(api, sent, "failed"))
    assert "550" in msg["reason"]
    assert await relay.before_marker(through(api, sent["handle"])) == [] and relay.replies == []
    assert await eventually(lambda: _has(api, msg, "MessageFailed"))
    assert await trail(api, msg) == ["SendRequested", "SendAccepted", "MessageFailed"]


async def test_a_send_deferred_past_its_lifetime_fails(api: Api, relay: Relay) -> None:
    """A relay that keeps answering 4xx: retried on the schedule, then failed when the lifetime (3 s here) ends."""
    relay.replies = ["421 4.3.2 Service not available"] * 50
    sent = await send_one(api, relay)
    msg = await eventually(lambda: message_state(api, sent, "failed"), timeout=30)
    assert msg["reason"].startswith("gave up after")
    assert await eventually(lambda: _has(api, msg, "MessageFailed"))  # the archive may be a moment behind
    types = await trail(api, msg)
    assert types.count("DispatchDeferred") >= 2 and types[-1] == "MessageFailed"
    assert relay.received == []


# The test relay takes AUTH without TLS on purpose (loopback, no certificates); aiosmtpd warns about that.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
async def test_relay_password_is_encrypted_at_rest_and_used_for_auth(api: Api, db: asyncpg.Pool) -> None:
    """The mailbox password is stored encrypted, and dispatch logs in to the relay with the real one."""
    logins: list[tuple[str, str]] = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=auth_data.password == b"s3cret-relay-pw")

    relay = Relay("127.0.0.1", free_port())
    controller = Controller(_RecordingHandler(relay), hostname="127.0.0.1", port=relay.port,
                            authenticator=authenticator, auth_require_tls=False, auth_required=True)  # fmt: skip
    controller.start()
    try:
        handle = f"auth-{uuid.uuid4().hex[:8]}@example.test"
        assert (await api.call("POST", "/v1/identities", {"handle": handle}))[0] == 201
        status, _, _ = await api.call("POST", f"/v1/identities/{handle}/mailboxes", {
            "email": "authed@tryacme.test",
            "smtp": {**relay.smtp_settings(), "username": "relay-user", "password": "s3cret-relay-pw"},
        })  # fmt: skip
        assert status == 201
        stored = await db.fetchval("SELECT smtp_password FROM mailboxes WHERE email = 'authed@tryacme.test'")
        assert stored.startswith("fernet:") and "s3cret" not in stored
        status, _, _ = await api.call(
            "POST", f"/v1/identities/{handle}/send", {"to": "m@example.test", "subject": "s", "text": "t"}
        )
        assert status == 202
        await relay.wait_for(1)
        assert logins[-1] == ("relay-user", "s3cret-relay-pw")
    finally:
        controller.stop()


async def test_a_slow_relay_holds_up_no_other_mailbox_and_its_send_completes_once(
    api: Api, relay: Relay, db: asyncpg.Pool
) -> None:
    """A relay that sits on DATA longer than dispatch's patience (1 s here): the send is handed to a
    lease and the next batch goes on, so another mailbox's message arrives while the slow relay still
    holds the first; the slow one then completes once, and its lease is gone so nothing sends it again."""
    relay.pauses = [2.5]  # under the 3 s SMTP timeout: slow, not failed
    slow = await send_one(api, relay)
    await eventually(lambda: _is(relay.pausing, 1), timeout=20)  # its batch is talking to the relay

    fast_relay = Relay("127.0.0.1", free_port())
    controller = Controller(_RecordingHandler(fast_relay), hostname="127.0.0.1", port=fast_relay.port)
    controller.start()
    try:
        await send_one(api, fast_relay)
        await fast_relay.wait_for(1, timeout=20)
        assert relay.pausing == 1 and relay.received == [], "the other mailbox waited for the slow relay"
    finally:
        controller.stop()

    [got] = await relay.wait_for(1)
    assert got.message["Message-ID"] == slow["id"]
    msg = await eventually(lambda: message_state(api, slow, "sent"))
    assert await eventually(lambda: _has(api, msg, "MessageSent"))
    assert (await trail(api, msg)).count("MessageSent") == 1
    message_id = uuid.UUID(msg["messageId"].split("_", 1)[1])
    handed_over = await db.fetchval(
        """SELECT count(*) FROM processed_events p JOIN event_archive m ON m.event_id = p.event_id
            WHERE p.consumer = 'dispatch' AND p.outputs = '[]'::jsonb
              AND m.message_ids @> ARRAY[$1]::uuid[] AND m.type = 'SendAccepted'""",
        message_id,
    )
    assert handed_over == 1  # its batch recorded it as handed over, not as sent
    leases = "SELECT count(*) FROM timers WHERE event -> 'payload' ->> 'message_id' = $1"
    assert await db.fetchval(leases, str(message_id)) == 0
    assert len(await relay.before_marker(through(api, slow["handle"]))) == 1


async def _is(value: int, expected: int) -> bool:
    return value == expected


async def test_sends_queued_behind_a_slow_relay_go_out_when_a_connection_frees(
    api: Api, relay: Relay, db: asyncpg.Pool
) -> None:
    """Six sends to one mailbox whose relay takes 1.5 s per message, four connections at a time: the two
    still waiting for a connection when the batch's patience runs out are handed over too, and go out as
    soon as a connection frees, once each, with no lease ever falling due (no retry in any trail)."""
    relay.pauses = [1.5] * 6
    handle, _ = await make_identity(api, relay)
    answers = await asyncio.gather(*(
        api.call("POST", f"/v1/identities/{handle}/send", {"to": f"q{i}@example.test", "subject": "s", "text": "t"})
        for i in range(6)
    ))  # fmt: skip
    assert [status for status, _, _ in answers] == [202] * 6
    await relay.wait_for(6, timeout=30)
    identity = await db.fetchval("SELECT id FROM identities WHERE lower(handle) = lower($1)", handle)

    async def all_sent() -> bool:
        return await db.fetchval(
            "SELECT count(*) FROM messages WHERE identity_id = $1 AND status = 'sent'", identity
        ) == 6  # fmt: skip

    await eventually(all_sent, timeout=20)
    retries = await db.fetchval(
        """SELECT count(*) FROM event_archive e JOIN messages m ON m.id = ANY(e.message_ids)
            WHERE m.identity_id = $1 AND e.type = 'DispatchRetryDue'""",
        identity,
    )
    assert retries == 0
    assert sorted(r.rcpt_tos[0] for r in relay.received) == [f"q{i}@example.test" for i in range(6)]


async def test_a_decision_delivered_twice_in_one_batch_is_sent_once(
    api: Api, relay: Relay, db: asyncpg.Pool, service_env: dict
) -> None:
    """The same SendAccepted twice back to back on the log (a re-drive while the first copy still waited
    for dispatch): both reach dispatch in one fetch, the relay gets the message once."""
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415 - this test writes to the log directly

    from schemas import topics  # noqa: PLC0415
    from schemas.events import Content, SendAccepted, SendAcceptedPayload  # noqa: PLC0415
    from schemas.ids import new_id  # noqa: PLC0415

    handle, [mailbox] = await make_identity(api, relay)
    identity = await db.fetchrow("SELECT id, org_id FROM identities WHERE handle = $1", handle)
    mailbox_id = await db.fetchval("SELECT id FROM mailboxes WHERE email = $1", mailbox["email"])
    event = SendAccepted(org_id=identity["org_id"], identity_id=identity["id"], payload=SendAcceptedPayload(
        message_id=new_id(), conv_id=new_id(), mailbox_id=mailbox_id, mailbox_email=mailbox["email"],
        affinity="new", rfc_message_id=f"<{uuid.uuid4()}@tryacme.test>", from_addr=mailbox["email"],
        to=["twice@example.test"], content=Content(subject="once", text="t"), daily_cap=150, remaining=149))  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=service_env["KAFKA_BOOTSTRAP_SERVERS"], linger_ms=50)
    await producer.start()
    try:
        name = topics.DECISIONS.name(service_env["SENDSTREAM_KAFKA_TOPIC_PREFIX"])
        copies = [
            await producer.send(name, event.model_dump_json().encode(), key=topics.key_of(event))
            for _ in range(2)
        ]
        await asyncio.gather(*copies)
    finally:
        await producer.stop()
    [got] = await relay.wait_for(1)
    assert got.message["Subject"] == "once"
    assert len(await relay.before_marker(through(api, handle))) == 1
