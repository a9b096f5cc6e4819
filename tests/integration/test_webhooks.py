"""Webhooks on real infrastructure: send -> Kafka -> webhooks service -> a real aiohttp receiver."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import datetime

import asyncpg
import pytest
from standardwebhooks import Webhook

from devstack.infra import free_port
from devstack.local import Stack, wait_ready
from schemas import topics
from schemas.events import MessageSent, MessageSentPayload, SmtpReply
from services.common.broker import ensure_topics, make_broker, publish_events
from services.common.settings import CommonSettings
from tests.conftest import REPORT, Api, Hook, Receiver, Relay, events_on, eventually, new_org
from tests.integration.test_send import make_identity

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def register(api: Api, url: str, events: list[str]) -> dict:
    status, body, _ = await api.call("POST", "/v1/webhooks", {"url": url, "events": events})
    assert status == 201, body
    assert body["secret"].startswith("whsec_")
    return body


async def send(api: Api, handle: str, to: str | list[str]) -> dict:
    status, body, _ = await api.call(
        "POST", f"/v1/identities/{handle}/send", {"to": to, "subject": "Hello", "text": "Hi"}
    )
    assert status == 202, body
    return body


async def deliveries(api: Api, webhook: dict) -> list[dict]:
    status, body, _ = await api.call("GET", f"/v1/webhooks/{webhook['id']}/deliveries")
    assert status == 200, body
    return body["data"]


async def test_send_produces_one_signed_message_sent(
    api: Api, operator: Api, relay: Relay, receiver: Receiver, db: asyncpg.Pool
) -> None:
    """Exactly one signed message.sent at the subscribed endpoint; nothing at the others."""
    sent_hook = await register(api, receiver.url("/sent"), ["message.sent"])
    alias_hook = await register(api, receiver.url("/alias"), ["email.sent"])
    await register(api, receiver.url("/failed-only"), ["message.failed", "message.rejected"])
    other = await new_org(operator)
    await register(other, receiver.url("/other-org"), ["message.sent"])
    handle, [mailbox] = await make_identity(api, relay)

    answer = await send(api, handle, "morgan@northwindrobotics.test")
    [message] = answer["messages"]
    [hook] = await receiver.wait_for("/sent", 1)

    payload = Webhook(sent_hook["secret"]).verify(hook.body, hook.headers)  # raises unless it verifies
    assert hook.headers["webhook-id"].startswith("whd_")
    assert abs(int(hook.headers["webhook-timestamp"]) - time.time()) < 60
    assert payload["type"] == "message.sent"
    data = payload["data"]
    assert data["id"] == message["id"]  # the RFC Message-ID, as the send answered it
    assert data["convId"] == message["convId"]
    assert data["messageId"].startswith("msg_")
    assert data["identity"] == handle
    assert data["status"] == "sent"
    assert data["to"] == ["morgan@northwindrobotics.test"]
    assert data["account"] == {"id": mailbox["id"], "email": mailbox["email"]}
    assert data["smtp"]["code"] == 250

    [alias] = await receiver.wait_for("/alias", 1)
    assert Webhook(alias_hook["secret"]).verify(alias.body, alias.headers)["type"] == "email.sent"
    with pytest.raises(Exception, match="signature"):
        Webhook(alias_hook["secret"]).verify(hook.body, hook.headers)  # each endpoint has its own secret

    # An event's deliveries to every endpoint are made in the one transaction that fans it out, so
    # what was made when /sent had its delivery is all there will be.
    made = {
        r["url"]: r["n"]
        for r in await db.fetch(
            """SELECT e.url, count(d.id) AS n FROM webhook_endpoints e
                 LEFT JOIN webhook_deliveries d ON d.endpoint_id = e.id WHERE e.url = ANY($1::text[])
                GROUP BY e.url""",
            [receiver.url(path) for path in ("/sent", "/failed-only", "/other-org")],
        )
    }
    assert made == {receiver.url("/sent"): 1, receiver.url("/failed-only"): 0, receiver.url("/other-org"): 0}
    assert len(receiver.at("/sent")) == 1
    assert receiver.at("/failed-only") == []
    assert receiver.at("/other-org") == []

    [delivery] = await eventually(lambda: _delivered(api, sent_hook))
    assert delivery["id"] == hook.headers["webhook-id"]
    assert delivery["type"] == "message.sent"
    assert delivery["attempts"][0]["statusCode"] == 200
    assert delivery["payload"] == payload

    async def audited():
        _, trail, _ = await api.call("GET", f"/v1/messages/{data['messageId']}/events")
        return [
            e
            for e in trail.get("data", [])  # (404 while the archive has none of the message's events)
            if e["type"] == "WebhookDelivered"
            and uuid.UUID(e["event"]["payload"]["delivery_id"]).hex == delivery["id"].removeprefix("whd_")
        ]

    [fact] = await eventually(audited)  # the attempt is an event in the message's audit trail
    assert fact["event"]["payload"]["status_code"] == 200


async def _delivered(api: Api, webhook: dict) -> list[dict] | None:
    found = await deliveries(api, webhook)
    return found if found and all(d["state"] == "delivered" for d in found) else None


async def test_failing_endpoint_gets_the_event_later_with_the_same_id(
    api: Api, relay: Relay, receiver: Receiver
) -> None:
    """500, 500, then 200: three attempts (on the shortened schedule), one webhook-id, all listed."""
    receiver.fail("/flaky", [500, 500])
    webhook = await register(api, receiver.url("/flaky"), ["message.sent"])
    handle, _ = await make_identity(api, relay)
    await send(api, handle, "lee@example.test")

    hooks = await receiver.wait_for("/flaky", 3)
    assert len({h.headers["webhook-id"] for h in hooks}) == 1
    assert len({h.body for h in hooks}) == 1  # the same body, signed afresh each time
    for h in hooks:
        Webhook(webhook["secret"]).verify(h.body, h.headers)

    [delivery] = await eventually(lambda: _delivered(api, webhook))
    assert [a["statusCode"] for a in delivery["attempts"]] == [500, 500, 200]
    assert all(a["durationMs"] >= 0 for a in delivery["attempts"])
    assert delivery["attemptCount"] == 3 and delivery["nextAttemptAt"] is None

    await asyncio.sleep(1)
    assert len(receiver.at("/flaky")) == 3  # delivered: never sent again


async def test_endpoint_down_gives_up_after_the_schedule_and_can_be_retried(
    api: Api, receiver: Receiver
) -> None:
    """Every attempt fails: the delivery fails after the schedule; a manual retry sends it again."""
    receiver.fail("/down", [503] * 4)
    webhook = await register(api, receiver.url("/down"), ["message.sent"])
    status, queued, _ = await api.call("POST", f"/v1/webhooks/{webhook['id']}/test")
    assert status == 202, queued

    async def failed():
        found = await deliveries(api, webhook)
        return found if found and found[0]["state"] == "failed" else None

    [delivery] = await eventually(failed)
    assert [a["statusCode"] for a in delivery["attempts"]] == [503] * 4  # first try + 3 retries
    assert delivery["nextAttemptAt"] is None

    status, body, _ = await api.call(
        "POST", f"/v1/webhooks/{webhook['id']}/deliveries/{delivery['id']}/retry"
    )
    assert status == 202, body
    hooks = await receiver.wait_for("/down", 5)
    assert {h.headers["webhook-id"] for h in hooks} == {delivery["id"]}
    [delivery] = await eventually(lambda: _delivered(api, webhook))
    assert delivery["attempts"][-1]["statusCode"] == 200


async def test_gone_disables_the_endpoint(api: Api, receiver: Receiver) -> None:
    receiver.fail("/gone", [410])
    webhook = await register(api, receiver.url("/gone"), ["message.sent"])
    assert (await api.call("POST", f"/v1/webhooks/{webhook['id']}/test"))[0] == 202

    async def disabled():
        _, body, _ = await api.call("GET", f"/v1/webhooks/{webhook['id']}")
        return body if not body["enabled"] else None

    body = await eventually(disabled)
    assert "410" in body["disabledReason"]
    status, _, _ = await api.call("POST", f"/v1/webhooks/{webhook['id']}/test")
    assert status == 409  # disabled: enable it first
    status, body, _ = await api.call("PATCH", f"/v1/webhooks/{webhook['id']}", {"enabled": True})
    assert status == 200 and body["enabled"] and body["disabledReason"] is None


async def test_secret_rotation_signs_with_both_during_the_grace_period(api: Api, receiver: Receiver) -> None:
    webhook = await register(api, receiver.url("/rotated"), ["message.sent"])
    status, rotated, _ = await api.call("POST", f"/v1/webhooks/{webhook['id']}/rotate-secret")
    assert status == 200, rotated
    assert rotated["secret"] != webhook["secret"]
    assert (await api.call("POST", f"/v1/webhooks/{webhook['id']}/test"))[0] == 202
    [hook] = await receiver.wait_for("/rotated", 1)
    assert len(hook.headers["webhook-signature"].split(" ")) == 2
    for secret in (webhook["secret"], rotated["secret"]):
        assert Webhook(secret).verify(hook.body, hook.headers)["type"] == "webhook.test"


async def test_hanging_endpoint_does_not_delay_a_healthy_one(
    api: Api, relay: Relay, receiver: Receiver, service_env: dict[str, str]
) -> None:
    """An endpoint that never answers holds only its own slots: the healthy one gets every event promptly."""
    receiver.hang("/hangs")
    await register(api, receiver.url("/hangs"), ["message.sent"])
    await register(api, receiver.url("/healthy"), ["message.sent"])
    handle, _ = await make_identity(api, relay)
    count = 20
    await send(api, handle, [f"lead{i}@example.test" for i in range(count)])

    hooks = await receiver.wait_for("/healthy", count)
    timeout = float(service_env["SENDSTREAM_WEBHOOK_TIMEOUT_S"])
    assert len(receiver.at("/hangs")) >= 1  # the hanging endpoint was being tried meanwhile
    lags = sorted(h.at - _occurred(h) for h in hooks)
    REPORT.append(
        f"webhooks, one endpoint hanging: the healthy endpoint got {count} events "
        f"{lags[len(lags) // 2]:.2f}s (p50) / {lags[-1]:.2f}s (max) after they happened"
    )
    # Queued behind the hanging endpoint, deliveries would wait for its timeouts.
    assert lags[-1] < timeout, lags


def _occurred(hook: Hook) -> float:
    return datetime.fromisoformat(hook.json["timestamp"].replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/hook",
        "http://localhost:9/hook",  # a hostname resolving to loopback
        "http://2130706433/hook",  # 127.0.0.1 spelt as one number
        "http://0x7f.1/hook",
        "ftp://example.test/hook",
    ],
)
async def test_private_destinations_are_refused_without_an_allow_list(strict_api: Api, url: str) -> None:
    status, body, _ = await strict_api.call("POST", "/v1/webhooks", {"url": url, "events": ["message.sent"]})
    assert status == 400, body
    assert body["error"]["message"].startswith("url: ")


async def test_bad_registrations_name_the_field(api: Api, receiver: Receiver) -> None:
    cases = [
        ({"url": receiver.url("/x"), "events": []}, "events"),
        ({"url": receiver.url("/x"), "events": ["message.exploded"]}, "events[0]"),
        ({"url": receiver.url("/x"), "events": ["message.sent", "message.sent"]}, "events"),
        ({"events": ["message.sent"]}, "url"),
    ]
    for request, field in cases:
        status, body, _ = await api.call("POST", "/v1/webhooks", request)
        assert status == 400, (request, body)
        assert body["error"]["message"].startswith(field), body


async def test_webhooks_of_another_organization_are_404(api: Api, operator: Api, receiver: Receiver) -> None:
    webhook = await register(api, receiver.url("/mine"), ["message.sent"])
    other = await new_org(operator)
    for method, path in [
        ("GET", f"/v1/webhooks/{webhook['id']}"),
        ("PATCH", f"/v1/webhooks/{webhook['id']}"),
        ("DELETE", f"/v1/webhooks/{webhook['id']}"),
        ("GET", f"/v1/webhooks/{webhook['id']}/deliveries"),
        ("POST", f"/v1/webhooks/{webhook['id']}/test"),
    ]:
        status, _, _ = await other.call(method, path, {} if method == "PATCH" else None)
        assert status == 404, (method, path)
    _, listed, _ = await other.call("GET", "/v1/webhooks")
    assert listed["data"] == []
    assert (await api.call("DELETE", f"/v1/webhooks/{webhook['id']}"))[0] == 204
    assert (await api.call("GET", f"/v1/webhooks/{webhook['id']}"))[0] == 404


async def test_deliveries_page_with_a_cursor(api: Api, receiver: Receiver) -> None:
    webhook = await register(api, receiver.url("/paged"), ["message.sent"])
    for _ in range(5):
        assert (await api.call("POST", f"/v1/webhooks/{webhook['id']}/test"))[0] == 202
    seen, cursor = [], None
    while True:
        query = f"?limit=2&cursor={cursor}" if cursor else "?limit=2"
        status, page, _ = await api.call("GET", f"/v1/webhooks/{webhook['id']}/deliveries{query}")
        assert status == 200, page
        seen += [d["id"] for d in page["data"]]
        if not page["hasMore"]:
            assert page["nextCursor"] is None
            break
        cursor = page["nextCursor"]
    assert len(seen) == len(set(seen)) == 5
    status, body, _ = await api.call("GET", f"/v1/webhooks/{webhook['id']}/deliveries?limit=0")
    assert status == 400 and body["error"]["message"].startswith("limit")


@pytest.fixture(scope="module")
def strict_ingress(stack: Stack) -> Iterator[str]:
    """A second ingress process whose operator allowed no private network; its base URL."""
    port = free_port()
    name = f"ingress-strict-{uuid.uuid4().hex[:4]}"
    stack.start(
        name,
        list(stack.args["ingress"]),
        env={"SENDSTREAM_HTTP_PORT": str(port), "SENDSTREAM_EGRESS_ALLOWED_NETWORKS": "[]"},
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", 60)
        yield f"http://127.0.0.1:{port}"
    finally:
        stack.stop(name)


@pytest.fixture
def strict_api(api: Api, strict_ingress: str) -> Api:
    return Api(api.session, strict_ingress, api.key)


async def test_an_endpoint_failing_for_days_is_disabled_and_an_event_says_so(
    api: Api, receiver: Receiver, db: asyncpg.Pool, service_env: dict[str, str]
) -> None:
    receiver.fail("/failing", [500])
    webhook = await register(api, receiver.url("/failing"), ["message.sent"])
    endpoint_id = uuid.UUID(webhook["id"].removeprefix("whk_"))
    await db.execute(  # its deliveries have failed, without a success, for six days
        "UPDATE webhook_endpoints SET failing_since = now() - interval '6 days' WHERE id = $1", endpoint_id
    )
    assert (await api.call("POST", f"/v1/webhooks/{webhook['id']}/test"))[0] == 202

    async def disabled():
        _, body, _ = await api.call("GET", f"/v1/webhooks/{webhook['id']}")
        return body if not body["enabled"] else None

    assert "5 days" in (await eventually(disabled))["disabledReason"]
    [fact] = await events_on(
        service_env,
        topics.WEBHOOKS,
        lambda e: e.type == "WebhookEndpointDisabled" and e.payload.endpoint_id == endpoint_id,
        bool,
    )
    assert fact.payload.url == webhook["url"] and "5 days" in fact.payload.reason


async def test_a_new_group_starts_at_the_end_and_then_never_skips(
    api: Api,
    receiver: Receiver,
    stack: Stack,
    service_env: dict[str, str],
    db: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The webhooks group, first created, ignores history; killed before it read anything and
    restarted, it misses nothing that happened meanwhile (consumer groups are per topic prefix)."""
    webhook = await register(api, receiver.url("/fresh"), ["message.sent"])
    org = await db.fetchval(
        "SELECT org_id FROM webhook_endpoints WHERE id = $1", uuid.UUID(webhook["id"].removeprefix("whk_"))
    )
    prefix = f"fresh{uuid.uuid4().hex[:8]}"  # new topics: for them the group is new
    for name, value in {**service_env, "SENDSTREAM_KAFKA_TOPIC_PREFIX": prefix}.items():
        monkeypatch.setenv(name, value)
    settings = CommonSettings()
    await ensure_topics(settings)
    broker = make_broker(settings, client_id="test")
    await broker.connect()
    port = free_port()
    env = {"SENDSTREAM_KAFKA_TOPIC_PREFIX": prefix, "SENDSTREAM_METRICS_PORT": str(port)}

    async def happened(count: int) -> list[str]:
        events = [sent_event(org) for _ in range(count)]
        for event in events:  # one record per batch: Tansu reports a batch's end as its first offset + 1
            await publish_events(broker, settings, [event])
        return [f"msg_{e.payload.message_id.hex}" for e in events]

    def arrived() -> set[str]:
        return {h.json["data"]["messageId"] for h in receiver.at("/fresh")}

    try:
        history = await happened(3)
        stack.start("webhooks-fresh", list(stack.args["webhooks"]), env=env)
        await asyncio.to_thread(wait_ready, f"http://127.0.0.1:{port}/readyz", 60)
        stack.kill("webhooks-fresh")  # before it has read (and committed) anything
        while_down = await happened(12)  # keyed by message: they fall on most partitions
        stack.start("webhooks-fresh")
        await eventually(lambda: asyncio.sleep(0, set(while_down) <= arrived()), timeout=30)
        live = await happened(1)
        await eventually(lambda: asyncio.sleep(0, set(live) <= arrived()))
        assert not set(history) & arrived()
    finally:
        stack.stop("webhooks-fresh")
        await broker.stop()


def sent_event(org: uuid.UUID) -> MessageSent:
    return MessageSent(
        org_id=org,
        payload=MessageSentPayload(
            message_id=uuid.uuid4(), mailbox_id=uuid.uuid4(), rfc_message_id="<x@y.test>", relay="r:25",
            reply=SmtpReply(code=250, message="OK"),
        ),
    )  # fmt: skip
