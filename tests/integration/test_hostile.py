"""Hostile input: nothing a client sends stalls the pipeline, breaks a header or is lost.

Every case is followed by a canary: a normal send from another organization must reach its relay
within a few seconds, so a case that stalled decide, dispatch or the projections for everyone fails
here, not only a case that answered wrongly.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from tests.conftest import Api, Relay, eventually, new_org
from tests.integration.test_send import make_identity

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

CANARY_WITHIN_S = 10


@dataclass
class Canary:
    """Another organization's identity, sending normally: each send's time to its relay is measured."""

    api: Api
    handle: str
    relay: Relay
    latencies: list[float] = dataclasses.field(default_factory=list)

    async def send(self, within: float = 60) -> float:
        """One normal send; its time from the request to the relay (waited for at most `within`)."""
        subject = f"canary {uuid.uuid4().hex[:8]}"
        started = time.monotonic()
        status, body, _ = await self.api.call(
            "POST", f"/v1/identities/{self.handle}/send", {"to": "c@example.test", "subject": subject, "text": "t"}
        )  # fmt: skip
        assert status == 202, body

        async def arrived() -> bool:
            return any(r.message["Subject"] == subject for r in self.relay.received)

        await eventually(arrived, timeout=within, interval=0.02)
        self.latencies.append(time.monotonic() - started)
        return self.latencies[-1]

    async def sings(self) -> None:
        """A normal send of another organization reaches its relay within CANARY_WITHIN_S."""
        assert await self.send(CANARY_WITHIN_S) < CANARY_WITHIN_S


@pytest_asyncio.fixture(loop_scope="session")
async def canary(operator: Api, relay_factory) -> AsyncIterator[Canary]:
    relay = relay_factory()
    api = await new_org(operator)
    handle, _ = await make_identity(api, relay)
    yield Canary(api, handle, relay)


async def send(api: Api, handle: str, body: dict | None = None, *, data: bytes | None = None):
    headers = {"Content-Type": "application/json"} if data is not None else None
    return await api.call("POST", f"/v1/identities/{handle}/send", body, data=data, headers=headers)


# --- header-bound fields ---------------------------------------------------------------------------

CONTROLS = ["\t", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x7f", "\x85", "\u2028", "\u2029", "\x00"]


@pytest.mark.parametrize("control", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
async def test_controls_in_header_fields_are_400_naming_the_field(
    api: Api, relay: Relay, canary: Canary, control: str
) -> None:
    """Every C0 control, DEL, NEL and the Unicode separators are refused in each header-bound field."""
    handle, _ = await make_identity(api, relay)
    injected = f"S{control}Reply-To : attacker@evil.test"
    cases = [
        ({"to": "r@example.test", "subject": injected, "text": "x"}, "subject:"),
        ({"to": "r@example.test", "subject": "s", "text": "x", "inReplyTo": injected}, "inReplyTo:"),
        (
            {"to": "r@example.test", "subject": "s", "text": "x", "references": ["<a@b>", injected]},
            "references[1]:",
        ),
        ({"to": [f"r{control}@example.test"], "subject": "s", "text": "x"}, "to"),
    ]
    for payload, field in cases:
        status, body, _ = await send(api, handle, payload)
        assert status == 400, (payload, body)
        assert body["error"]["message"].startswith(field), body
    await canary.sings()
    assert relay.received == []


HEADER_NAMES = {"content-type", "mime-version", "content-transfer-encoding", "from", "to", "subject", "date",
                "message-id", "in-reply-to", "references"}  # fmt: skip

# What may pass the API (no control characters) and must still land inside its own header.
CORPUS = [
    "S Reply-To : attacker@evil.test",
    "S\u00a0Reply-To: attacker@evil.test",
    "=?utf-8?q?S=0D=0AReply-To:_attacker@evil.test?=",
    "=?utf-8?b?UwpSZXBseS1UbzogYXR0YWNrZXJAZXZpbC50ZXN0?=",
    "S: Bcc: victim@example.test",
    "Ünïcödé \u200b\u202e Reply-To: x@evil.test " + "x" * 200,
    "S " + "Reply-To: a@evil.test " * 40,
]


async def test_injection_corpus_adds_no_header_line_at_the_relay(
    api: Api, relay: Relay, canary: Canary
) -> None:
    """Each corpus value in each header-bound field is delivered inside its own header: the relay's
    header block has no line the pipeline did not write."""
    handle, _ = await make_identity(api, relay)
    sent = 0
    for value in CORPUS:
        for payload in (
            {"subject": value},
            {"subject": "s", "inReplyTo": value},
            {"subject": "s", "references": [value, "<b@example.test>"]},
        ):
            status, body, _ = await send(api, handle, {"to": "r@example.test", "text": "x", **payload})
            if status == 400:
                continue
            assert status == 202, body
            sent += 1
    assert sent >= len(CORPUS)
    received = await relay.wait_for(sent, timeout=30)
    for r in received:
        head = r.data.split(b"\r\n\r\n", 1)[0].decode("ascii")
        names = [
            line.split(":", 1)[0].lower() for line in head.split("\r\n") if line and line[0] not in " \t"
        ]
        assert set(names) <= HEADER_NAMES, names
        assert len(names) == len(set(names)), names
    await canary.sings()


# --- bodies: size, NUL, surrogates, nesting, types -------------------------------------------------


async def test_sizes_around_the_limit_are_refused_or_delivered(
    api: Api, relay: Relay, canary: Canary
) -> None:
    """Texts from 0.9 to 1.1 MB: each is 413 (JSON, naming the limit) or accepted and delivered; none stuck."""
    handle, _ = await make_identity(api, relay)
    accepted = 0
    for size in (900_000, 960_000, 1_000_000, 1_020_000, 1_047_607, 1_048_000, 1_050_000, 1_100_000):
        data = json.dumps({"to": ["big@northwind.test"], "subject": f"s{size}", "text": "a" * size}).encode()
        status, body, _ = await send(api, handle, data=data)
        assert status in (202, 413), (size, status, body)
        if status == 413:
            assert body["error"]["type"] == "payload_too_large" and "bytes" in body["error"]["message"], body
        else:
            assert body["messages"][0]["status"] == "accepted", body
            accepted += 1
            await relay.wait_for(accepted, timeout=20)
        await canary.sings()
    assert accepted >= 1  # the documented limit leaves room for a message of 0.9 MB


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"to": "r@example.test", "subject": "s", "text": "a\\u0000b"}', "text: must not contain NUL"),
        (
            b'{"to": "r@example.test", "subject": "s", "text": "a\\ud800b"}',
            "text: contains an unpaired surrogate",
        ),
        (
            b'{"to": "r@example.test", "subject": "s", "html": "\\udfff"}',
            "html: contains an unpaired surrogate",
        ),
        (b'{"to": "r@example.test", "subject": "s", "text": "t", "x\\u0000": 1}', "must not contain NUL"),
        (b"[" * 5000 + b"]" * 5000, "nests deeper"),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, "nests deeper"),
        (b'{"to": "r@example.test", "subject": "s", "text": ' + b"[" * 40 + b"]" * 40 + b"}", "nests deeper"),
    ],
    ids=[
        "nul-text",
        "surrogate-text",
        "surrogate-html",
        "nul-key",
        "deep-array",
        "deep-object",
        "deep-field",
    ],
)
async def test_unstorable_or_deep_bodies_are_400(
    api: Api, relay: Relay, canary: Canary, raw: bytes, message: str
) -> None:
    """NUL, lone surrogates and deep nesting: 400 with the JSON error shape, never 202, 500 or 503."""
    handle, _ = await make_identity(api, relay)
    status, body, _ = await send(api, handle, data=raw)
    assert status == 400, body
    assert message in body["error"]["message"], body
    await canary.sings()
    assert relay.received == []


async def test_deep_json_is_400_on_every_route_with_a_body(api: Api) -> None:
    deep = b'{"a":' * 5000 + b"1" + b"}" * 5000
    for method, path in (("POST", "/v1/identities"), ("POST", "/v1/webhooks"), ("POST", "/v1/api-keys")):
        status, body, _ = await api.call(
            method, path, data=deep, headers={"Content-Type": "application/json"}
        )
        assert status == 400 and "nests deeper" in body["error"]["message"], (path, body)


async def test_a_body_over_the_limit_is_413_as_json(api: Api, relay: Relay) -> None:
    handle, _ = await make_identity(api, relay)
    data = json.dumps({"to": "r@example.test", "subject": "s", "text": "a" * 3_000_000}).encode()
    status, body, headers = await send(api, handle, data=data)
    assert status == 413 and headers["Content-Type"].startswith("application/json"), body
    assert body["error"]["type"] == "payload_too_large" and "1048576 bytes" in body["error"]["message"]


@pytest.mark.parametrize(
    ("path_kind", "payload", "field"),
    [
        ("identity", {"dailyCap": False}, "dailyCap"),
        ("identity", {"dailyCap": "10"}, "dailyCap"),
        ("identity", {"dailyCap": 1.5}, "dailyCap"),
        ("webhook", {"enabled": 0}, "enabled"),
        ("webhook", {"enabled": "yes"}, "enabled"),
        ("webhook", {"enabled": "on"}, "enabled"),
    ],
)
async def test_no_type_is_coerced(
    api: Api, relay: Relay, receiver, path_kind: str, payload: dict, field: str
) -> None:
    """`false` is not a number and `0` or `"yes"` is not a boolean: 400 naming the field, nothing changed."""
    if path_kind == "identity":
        handle, _ = await make_identity(api, relay, daily_cap=7)
        path = f"/v1/identities/{handle}"
    else:
        status, hook, _ = await api.call(
            "POST", "/v1/webhooks", {"url": receiver.url("/h"), "events": ["message.sent"]}
        )
        assert status == 201, hook
        path = f"/v1/webhooks/{hook['id']}"
    status, body, _ = await api.call("PATCH", path, payload)
    assert status == 400 and body["error"]["message"].startswith(field), body
    status, now, _ = await api.call("GET", path)
    assert status == 200 and (now.get("dailyCap", 7) == 7 and now.get("enabled", True) is True)


async def test_address_lengths_follow_rfc_5321(api: Api, relay: Relay) -> None:
    handle, _ = await make_identity(api, relay)
    status, body, _ = await send(api, handle, {"to": "a" * 65 + "@example.test", "subject": "s", "text": "t"})
    assert status == 400 and "64 octets" in body["error"]["message"], body
    status, body, _ = await send(api, handle, {"to": "a" * 64 + "@example.test", "subject": "s", "text": "t"})
    assert status == 202, body


# --- addresses the relay must get in a form it takes ------------------------------------------------


async def test_idn_domains_go_out_as_idna_and_a_utf8_local_part_fails_visibly(
    api: Api, relay_factory, canary: Canary
) -> None:
    """A Unicode (or punycode) domain reaches the relay as IDNA; a non-ASCII local part toward a relay
    without SMTPUTF8 ends `failed` with a reason, and the partition goes on; one with SMTPUTF8 takes it."""
    plain, utf8 = relay_factory(smtputf8=False), relay_factory(smtputf8=True)
    handle, _ = await make_identity(api, plain)
    for to in ("ana@bücher.example.test", "ana@xn--bcher-kva.example.test", "ñandú@example.test"):
        status, body, _ = await send(api, handle, {"to": to, "subject": f"to {to}", "text": "t"})
        assert status == 202 and body["messages"][0]["status"] == "accepted", body
    conv = body["messages"][0]["convId"]

    async def failed():
        _, c, _ = await api.call("GET", f"/v1/conversations/{conv}")
        return c and c["messages"] and c["messages"][0]["status"] == "failed" and c["messages"][0]

    message = await eventually(failed, timeout=15)
    assert "SMTPUTF8" in message["reason"], message
    assert [r.rcpt_tos for r in plain.received] == [["ana@xn--bcher-kva.example.test"]] * 2
    assert plain.received[0].message["To"] == "ana@xn--bcher-kva.example.test"
    await canary.sings()

    handle, _ = await make_identity(api, utf8)
    status, body, _ = await send(api, handle, {"to": "ñandú@example.test", "subject": "utf8", "text": "t"})
    assert status == 202, body
    [got] = await utf8.wait_for(1)
    assert got.rcpt_tos == ["ñandú@example.test"]


# --- the rest of the API surface -------------------------------------------------------------------


async def test_405_names_the_allowed_methods(api: Api) -> None:
    status, body, headers = await api.call("PUT", "/v1/identities")
    assert status == 405 and set(headers["Allow"].replace(" ", "").split(",")) == {"GET", "POST"}, headers
    assert body["error"]["type"] == "method_not_allowed"


async def test_a_cursor_outside_64_bits_is_400(api: Api, receiver) -> None:
    import base64  # noqa: PLC0415

    status, hook, _ = await api.call(
        "POST", "/v1/webhooks", {"url": receiver.url("/c"), "events": ["message.sent"]}
    )
    assert status == 201, hook
    for seq in (2**64, -1, 2**63):
        cursor = base64.urlsafe_b64encode(str(seq).encode()).decode().rstrip("=")  # the form of ours
        status, body, _ = await api.call("GET", f"/v1/webhooks/{hook['id']}/deliveries?cursor={cursor}")
        assert status == 400 and body["error"]["message"].startswith("cursor:"), body


UNSAFE_URLS = [
    "http://[64:ff9b::a00:1]/h",
    "http://[64:ff9b:1::a00:1]/h",
    "http://[2002:a00:1::]/h",
    "http://[::10.0.0.1]/h",
    "http://[::ffff:0:a00:1]/h",
    "http://[::ffff:10.0.0.1]/h",
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/h",
    "http://192.0.0.192/h",
    "http://198.18.0.1/h",
    "http://[100::1]/h",
    " http://93.184.215.14/h",
    "http://93.184.215.14:0/h",
    "http://93.184.215.14\\@127.0.0.1/h",
]


async def test_unsafe_webhook_urls_are_refused_on_create_and_patch(api: Api, receiver) -> None:
    status, hook, _ = await api.call(
        "POST", "/v1/webhooks", {"url": receiver.url("/ok"), "events": ["message.sent"]}
    )
    assert status == 201, hook
    for url in UNSAFE_URLS:
        status, body, _ = await api.call("POST", "/v1/webhooks", {"url": url, "events": ["message.sent"]})
        assert status == 400 and body["error"]["message"].startswith("url:"), (url, body)
        status, body, _ = await api.call("PATCH", f"/v1/webhooks/{hook['id']}", {"url": url})
        assert status == 400 and body["error"]["message"].startswith("url:"), (url, body)


async def test_a_request_decide_cannot_store_is_rejected_visibly_and_the_partition_moves_on(
    api: Api, relay: Relay, db, service_env: dict
) -> None:
    """A request written straight to the log (not through the API) with a byte PostgreSQL refuses: decide
    fails on it every time, then rejects it `unprocessable` with the error, instead of parking or
    retrying forever; the identity's next send goes out."""
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415 - this test writes to the log directly

    from schemas import topics  # noqa: PLC0415
    from schemas.events import Content, RequestedMessage, SendRejected, SendRequested, SendRequestedPayload  # noqa: PLC0415
    from schemas.ids import new_id  # noqa: PLC0415
    from tests.conftest import events_on  # noqa: PLC0415

    handle, _ = await make_identity(api, relay)
    identity = await db.fetchrow("SELECT id, org_id FROM identities WHERE handle = $1", handle)
    request = SendRequested(org_id=identity["org_id"], identity_id=identity["id"], payload=SendRequestedPayload(
        handle=handle, messages=[RequestedMessage(message_id=new_id(), conv_id=new_id(), to="p@example.test")],
        content=Content(subject="nul \x00 here", text="t")))  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=service_env["KAFKA_BOOTSTRAP_SERVERS"])
    await producer.start()
    try:
        await producer.send_and_wait(
            topics.REQUESTS.name(service_env["SENDSTREAM_KAFKA_TOPIC_PREFIX"]),
            request.model_dump_json().encode(),
            key=str(identity["id"]).encode(),
        )
    finally:
        await producer.stop()
    found = await events_on(
        service_env,
        topics.DECISIONS,
        lambda e: isinstance(e, SendRejected) and e.causation_id == request.event_id,
        lambda kept: len(kept) >= 1,
        timeout=30,
    )
    # One decision: the log may carry it twice (published again after a redelivery, under its event id).
    [rejected] = {e.event_id: e for e in found}.values()
    assert rejected.payload.reason == "unprocessable" and "0x00" in rejected.payload.detail, rejected
    status, body, _ = await send(api, handle, {"to": "next@example.test", "subject": "after", "text": "t"})
    assert status == 202, body
    [got] = await relay.wait_for(1)
    assert got.message["Subject"] == "after"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/identities/%00", "/v1/suppressions/%00", "/mailboxes/%00", "/v1/messages/wait?inbox=%00",
        "/v1/events?types=%00", "/v1/inboxes/%00/messages", "/v1/events?x%00=1",
    ],
)  # fmt: skip
async def test_nul_or_a_lone_surrogate_in_a_path_or_query_is_400_naming_it(api: Api, path: str) -> None:
    """Finding 11: a parameter PostgreSQL cannot store is refused as bad input, not a 500."""
    status, body, _ = await api.call("GET", path)
    assert status == 400, (path, status, body)
    text = json.dumps(body)
    assert "NUL" in text or "surrogate" in text or "UTF-8" in text, (path, body)
