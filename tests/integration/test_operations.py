"""Operational endpoints and the admin routes of the identities dialect, on the real stack."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from devstack.infra import free_port
from schemas import topics
from schemas.events import EVENT_TYPES
from services.common.settings import IngressSettings
from services.ingress.app import create_app
from tests.conftest import Api, Relay, events_on, eventually
from tests.integration.test_send import make_identity

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def test_health_and_readiness(api: Api) -> None:
    """/healthz answers while the process is up; /readyz checks the broker and the database."""
    assert (await api.call("GET", "/healthz", key=None))[:2] == (200, {"status": "ok"})
    status, body, _ = await api.call("GET", "/readyz", key=None)
    assert status == 200 and body["checks"] == {"database": "ok", "broker": "ok"}


async def test_metrics_are_prometheus_text(api: Api) -> None:
    """/metrics exposes request counters labelled by route."""
    await api.call("GET", "/healthz", key=None)
    status, text, headers = await api.call("GET", "/metrics", key=None)
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert 'sendstream_http_requests_total{method="GET",route="/healthz",status="200"}' in text


async def test_openapi_covers_every_route(api: Api) -> None:
    """/openapi.json is OpenAPI 3.1 and documents every route the server has, with its body schema (but the
    dashboard's pages under /ui, which are HTML for a person, not the API)."""
    status, doc, _ = await api.call("GET", "/openapi.json", key=None)
    assert status == 200 and doc["openapi"] == "3.1.0"
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    router = create_app(IngressSettings()).router
    served = {
        (r.method, r.resource.canonical)
        for r in router.routes()
        if r.method != "HEAD" and not r.resource.canonical.startswith("/ui")
    }
    assert documented == served
    send = doc["paths"]["/v1/identities/{handle}/send"]["post"]
    assert send["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SendRequest"
    }
    assert "SendResponse" in doc["components"]["schemas"]
    # Every reference resolves: models of one name in two dialects (Message, Webhook) are two components.
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(doc)))
    assert refs and refs <= set(doc["components"]["schemas"]), sorted(refs - set(doc["components"]["schemas"]))
    hooks = doc["paths"]["/v1/webhooks/{id}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    agentmail_hooks = doc["paths"]["/v0/webhooks/{webhook_id}"]["get"]["responses"]["200"]["content"]["application/json"]
    assert hooks != agentmail_hooks["schema"]


async def test_identity_and_mailbox_admin(api: Api, relay: Relay) -> None:
    """Identities and mailboxes can be listed, read, changed and removed; passwords are never returned."""
    handle, [mailbox] = await make_identity(api, relay)
    status, body, _ = await api.call("POST", "/v1/identities", {"handle": handle})
    assert status == 409

    status, listed, _ = await api.call("GET", "/v1/identities")
    assert [i["handle"] for i in listed["data"]] == [handle]
    status, patched, _ = await api.call(
        "PATCH", f"/v1/identities/{handle}", {"dailyCap": 7, "timezone": "Europe/Paris"}
    )
    assert status == 200 and patched["dailyCap"] == 7 and patched["timezone"] == "Europe/Paris"
    status, body, _ = await api.call("PATCH", f"/v1/identities/{handle}", {"timezone": "Mars/Olympus"})
    assert status == 400 and body["error"]["message"].startswith("timezone:")

    status, added, _ = await api.call(
        "POST",
        f"/v1/identities/{handle}/mailboxes",
        {
            "email": "second@tryacme.test",
            "smtp": {**relay.smtp_settings(), "username": "u", "password": "s3cret"},
            "hourlyLimit": 50,
            "dailyLimit": 300,
        },
    )
    assert status == 201 and added["smtp"] == {**relay.smtp_settings(), "username": "u"}
    assert "s3cret" not in str(added)
    path = f"/v1/identities/{handle}/mailboxes/{added['id']}"
    status, changed, _ = await api.call("PATCH", path, {"health": "paused", "dailyLimit": None})
    assert status == 200 and changed["health"] == "paused" and changed["dailyLimit"] is None
    assert changed["hourlyLimit"] == 50
    status, pool, _ = await api.call("GET", f"/v1/identities/{handle}/mailboxes")
    assert [m["email"] for m in pool["data"]] == [mailbox["email"], "second@tryacme.test"]
    assert "s3cret" not in str(pool)
    assert (await api.call("DELETE", path))[0] == 204
    assert (await api.call("DELETE", path))[0] == 404

    assert (await api.call("DELETE", f"/v1/identities/{handle}"))[0] == 204
    assert (await api.call("GET", f"/v1/identities/{handle}"))[0] == 404


async def test_consumer_services_expose_health_and_metrics(api: Api, relay: Relay, stack) -> None:
    """Each consumer service answers /healthz and counts its batches, events and SMTP outcomes in /metrics."""
    handle, [mailbox] = await make_identity(api, relay)
    assert (
        await api.call(
            "POST", f"/v1/identities/{handle}/send", {"to": "m@example.test", "subject": "s", "text": "t"}
        )
    )[0] == 202
    await relay.wait_for(1)
    # an IMAP account set and taken away: facts for the mail sync service to consume
    url = f"/v1/identities/{handle}/mailboxes/{mailbox['id']}"
    imap = {"host": "127.0.0.1", "port": free_port(), "tls": "none", "username": "u", "password": "p"}
    assert (await api.call("PATCH", url, {"imap": imap}))[0] == 200
    assert (await api.call("PATCH", url, {"imap": None}))[0] == 200
    for name, port in stack.metrics_ports.items():
        base = f"http://127.0.0.1:{port}"
        async with api.session.get(f"{base}/healthz") as r:
            assert r.status == 200, name

        async def counted(base: str = base, name: str = name) -> str | None:
            async with api.session.get(f"{base}/metrics") as r:
                text = await r.text()
            return text if f'sendstream_consumer_events_total{{group="{name}"}}' in text else None

        text = await eventually(counted, timeout=10, interval=0.2)
        assert f'sendstream_consumer_batch_seconds_count{{group="{name}"}}' in text, name
    async with api.session.get(f"http://127.0.0.1:{stack.metrics_ports['dispatch']}/metrics") as r:
        text = await r.text()
    sent = [
        ln for ln in text.splitlines() if ln.startswith('sendstream_dispatch_outcomes_total{outcome="sent"}')
    ]
    assert sent and float(sent[0].split()[-1]) >= 1


async def test_asyncapi_documents_every_topic_and_event(api: Api, service_env: dict) -> None:
    """/asyncapi.json (FastStream's AsyncAPI 3.0) has a channel per topic and a schema for every event type."""
    status, doc, _ = await api.call("GET", "/asyncapi.json", key=None)
    assert status == 200 and doc["asyncapi"].startswith("3.")
    prefix = service_env["SENDSTREAM_KAFKA_TOPIC_PREFIX"]
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == {t.name(prefix) for t in topics.ALL_TOPICS}
    assert set(EVENT_TYPES) <= set(doc["components"]["schemas"])


async def test_admin_facts_reach_the_log_through_the_outbox(
    api: Api, relay: Relay, service_env: dict
) -> None:
    """Creating an identity, adding and pausing a mailbox publish their facts (committed with the change)."""
    handle, [mailbox] = await make_identity(api, relay)
    assert (
        await api.call("PATCH", f"/v1/identities/{handle}/mailboxes/{mailbox['id']}", {"health": "paused"})
    )[0] == 200
    identity_id = str(
        uuid.UUID((await api.call("GET", f"/v1/identities/{handle}"))[1]["id"].removeprefix("idn_"))
    )
    seen = [
        e.type
        for e in await events_on(
            service_env,
            topics.ADMIN,
            lambda e: str(e.identity_id) == identity_id,
            lambda kept: "MailboxUpdated" in [e.type for e in kept],
        )
    ]
    assert seen == ["IdentityCreated", "MailboxAdded", "MailboxHealthChanged", "MailboxUpdated"]


async def test_llms_txt_describes_every_route_and_how_to_send_once(api: Api) -> None:
    async with api.session.get(f"{api.base}/llms.txt") as r:
        assert r.status == 200 and r.content_type == "text/markdown"
        text = await r.text()
    assert text.startswith("# sendstream\n") and "Idempotency-Key" in text and "/v1/messages/wait" in text
    _, doc, _ = await api.call("GET", "/openapi.json", key=None)
    missing = [f"{m.upper()} {p}" for p, ops in doc["paths"].items() for m in ops if f"`{m.upper()} {p}`" not in text]
    assert not missing, missing
