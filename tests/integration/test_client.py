"""The Python client (clients/python, `sendstream-client`) against the real stack: every method, through
the sync client and the async one (one walk-through, run with each); its models against the server's own
/openapi.json, field by field; a send's retry with the same Idempotency-Key; a delivered webhook verified
with the client's helper; wait_for_reply hearing a reply that came in by SMTP."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, get_args, get_origin

import pytest
from pydantic import BaseModel
from sendstream_client import AsyncSendstream, Conflict, NotFound, Sendstream, models, verify_webhook
from sendstream_client.client import Call, _Operations

from tests.conftest import Api, Receiver, Relay, deliver, eventually
from tests.integration.test_inbound import reply_to

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

Do = Callable[..., Awaitable[Any]]  # calls a client method (the sync client's in a thread) and awaits it


def clients(api: Api) -> list[tuple[str, Any, Do]]:
    sync = Sendstream(api.base, api.key)

    async def in_thread(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(method, *args, **kwargs)

    async def awaited(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await method(*args, **kwargs)

    return [("sync", sync, in_thread), ("async", AsyncSendstream(api.base, api.key), awaited)]


@pytest.mark.parametrize("which", ["sync", "async"])
async def test_every_method_against_the_server(
    which: str, api: Api, relay: Relay, inbound: int, receiver: Receiver
) -> None:
    [(_, client, do)] = [c for c in clients(api) if c[0] == which]
    tag = uuid.uuid4().hex[:6]
    handle = f"agent-{tag}@example.test"

    # Identities and mailboxes.
    identity = await do(client.create_identity, handle, daily_cap=20, timezone="Europe/Paris")
    assert (identity.handle, identity.daily_cap, identity.timezone) == (handle, 20, "Europe/Paris")
    assert handle in [i.handle for i in (await do(client.list_identities)).data]
    assert (await do(client.update_identity, handle, daily_cap=30)).daily_cap == 30
    assert (await do(client.get_identity, handle)).daily_cap == 30
    mailbox = await do(client.add_mailbox, handle, f"sender-{tag}@tryacme.test", relay.smtp_settings())
    spare = await do(client.add_mailbox, handle, f"spare-{tag}@tryacme.test", relay.smtp_settings())
    assert {b.id for b in (await do(client.list_mailboxes, handle)).data} == {mailbox.id, spare.id}
    assert (await do(client.update_mailbox, handle, spare.id, hourlyLimit=5)).hourly_limit == 5
    assert (await do(client.get_mailbox, handle, spare.id)).hourly_limit == 5
    await do(client.remove_mailbox, handle, spare.id)

    # A webhook, verified with the client's helper when the send's message.sent arrives.
    hook = await do(client.create_webhook, receiver.url(f"/c-{tag}"), ["message.sent"], description="client")
    assert hook.secret.startswith("whsec_") and hook.id in [w.id for w in (await do(client.list_webhooks)).data]

    # A send, twice under one key: one message.
    key = f"k-{tag}"
    sent = [await do(client.send, handle, "ana@example.test", f"Hello {tag}", text="Hi", idempotency_key=key) for _ in range(2)]
    assert sent[0].messages == sent[1].messages and sent[0].accepted == 1
    [result] = sent[0].messages
    assert isinstance(result, models.SendResult) and result.account and result.account.email == mailbox.email
    [out] = await relay.wait_for(1)
    [delivery] = await receiver.wait_for(f"/c-{tag}", 1)
    assert verify_webhook(hook.secret, delivery.body, delivery.headers)["type"] == "message.sent"
    assert (await do(client.get_webhook, hook.id)).description == "client"
    assert not (await do(client.update_webhook, hook.id, enabled=False)).enabled
    await do(client.update_webhook, hook.id, enabled=True)
    deliveries = await do(client.list_deliveries, hook.id)
    assert deliveries.data and deliveries.data[0].state in ("pending", "delivered")
    mine = await do(client.list_deliveries, hook.id, message_id=deliveries.data[0].message_id)
    assert [d.id for d in mine.data] == [deliveries.data[0].id]
    assert (await do(client.test_webhook, hook.id)).type == "webhook.test"
    assert (await do(client.retry_delivery, hook.id, deliveries.data[0].id)).id == deliveries.data[0].id
    assert (await do(client.rotate_webhook_secret, hook.id)).secret != hook.secret
    await do(client.delete_webhook, hook.id)
    with pytest.raises(NotFound):
        await do(client.get_webhook, hook.id)

    # The conversation, its audit trail, a reply out and a reply in (heard by wait_for_reply).
    conversation = await do(client.get_conversation, result.conv_id)
    assert conversation.messages[0].id == result.id and conversation.identity == handle
    trail = [e.type for e in (await do(client.message_events, conversation.messages[0].message_id)).data]
    assert trail.index("SendRequested") < trail.index("SendAccepted") < trail.index("MessageSent")
    detail = await do(client.get_message, conversation.messages[0].message_id)
    assert detail.identity == handle and detail.conv_id == result.conv_id and detail.raw_url and detail.attachments == []
    answered = await do(client.reply, handle, result.conv_id, text="Following up")
    assert answered.messages[0].conv_id == result.conv_id
    waiting = asyncio.ensure_future(do(client.wait_for_reply, conversation=result.conv_id, timeout=20))
    await asyncio.sleep(0.5)
    await deliver(inbound, reply_to(out.message, "ana@example.test", mailbox.email, "Sounds good"), "ana@example.test", [mailbox.email])
    heard = (await waiting).message
    assert heard is not None and heard.type == "MessageReceived" and heard.conv_id == result.conv_id
    async def all_three():  # the views show the reply and the answer shortly after
        listed = await do(client.list_conversations, handle, limit=1)
        return listed if len(listed.data[0].messages) == 3 else None

    listed = await eventually(all_three)
    assert [c.id for c in listed.data] == [result.conv_id]
    found = await do(client.search_messages, handle, "sounds")
    assert [f.conv_id for f in found.data] == [result.conv_id] and found.data[0].direction == "inbound"
    # The organization's (this one has this identity only): the same.
    assert [c.id for c in (await do(client.list_conversations, None, limit=1)).data] == [result.conv_id]
    assert [f.conv_id for f in (await do(client.search_messages, None, "sounds")).data] == [result.conv_id]
    page = await do(client.list_events, types=["MessageReceived"])
    assert page.data and all(e.type == "MessageReceived" for e in page.data)

    # A scheduled send, listed and cancelled.
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    scheduled = await do(client.send, handle, "bo@example.test", "Later", text="t", send_at=later)
    [waits] = scheduled.messages
    assert isinstance(waits, models.ScheduledResult)
    assert waits.message_id in [s.message_id for s in (await do(client.list_scheduled, identity=handle)).data]
    assert (await do(client.cancel, waits.message_id)).status == "cancelled"

    # Drafts: made, edited, approved once; another rejected.
    draft = await do(client.create_draft, handle, "cy@example.test", "Draft", text="v1")
    assert (await do(client.update_draft, draft.id, text="v2")).text == "v2"
    assert (await do(client.get_draft, draft.id)).status == "pending"
    assert draft.id in [d.id for d in (await do(client.list_drafts, status="pending", identity=handle)).data]
    others = [await do(client.create_draft, handle, f"p{i}@example.test", "Paged", text="t") for i in range(3)]
    if which == "sync":
        paged = await asyncio.to_thread(lambda: [d.id for d in client.each(client.list_drafts, identity=handle, limit=2)])
    else:
        paged = [d.id async for d in client.each(client.list_drafts, identity=handle, limit=2)]
    assert paged == [draft.id, *(o.id for o in others)]  # oldest first, across pages of two
    approved = await do(client.approve_draft, draft.id)
    assert approved.draft.status == "approved" and approved.accepted == 1
    other = await do(client.create_draft, handle, "dee@example.test", "No", text="t")
    assert (await do(client.reject_draft, other.id, "off-brand")).reason == "off-brand"
    with pytest.raises(Conflict):
        await do(client.approve_draft, other.id)

    # Suppressions.
    address = f"gone-{tag}@example.test"
    assert (await do(client.suppress, address)).reason == "manual"
    assert (await do(client.get_suppression, address)).address == address
    assert address in [s.address for s in (await do(client.list_suppressions)).data]
    refused = await do(client.send, handle, address, "Hi", text="t")
    assert refused.rejected == 1
    await do(client.unsuppress, address)
    with pytest.raises(NotFound) as missing:
        await do(client.get_suppression, address)
    assert missing.value.status == 404 and "not found" in missing.value.message.lower()

    await do(client.delete_identity, handle)
    if which == "sync":
        client.close()
    else:
        await client.close()


async def test_the_feed_pages_and_streams_through_both_clients(api: Api, relay: Relay) -> None:
    sync, aclient = Sendstream(api.base, api.key), AsyncSendstream(api.base, api.key)
    handle = f"feed-{uuid.uuid4().hex[:6]}@example.test"
    await aclient.create_identity(handle)
    await aclient.add_mailbox(handle, f"s-{uuid.uuid4().hex[:6]}@tryacme.test", relay.smtp_settings())
    stream = aclient.stream_events(types=["SendRequested"])
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.5)
    sent = await aclient.send(handle, "ana@example.test", "Streamed", text="t")
    event = await asyncio.wait_for(first, 20)
    assert event.type == "SendRequested" and event.event["payload"]["messages"][0]["to"] == ["ana@example.test"]
    await stream.aclose()
    every = await asyncio.to_thread(lambda: list(sync.iter_events(types=["SendRequested"])))
    assert event.id in [e.id for e in every] and sent.accepted == 1
    assert [e.id async for e in aclient.iter_events(types=["SendRequested"])] == [e.id for e in every]
    sync.close()
    await aclient.close()


# --- the models against /openapi.json -------------------------------------------------------------------

# Each route the client calls, and the model its answer is read as.
ANSWERS: list[tuple[str, str, type[BaseModel]]] = [
    ("get", "/v1/identities", models.IdentityList), ("get", "/v1/identities/{handle}", models.Identity),
    ("get", "/v1/identities/{handle}/mailboxes/{accId}", models.Mailbox),
    ("get", "/v1/identities/{handle}/mailboxes", models.MailboxList),
    ("post", "/v1/identities/{handle}/send", models.SendResponse), ("get", "/v1/conversations/{convId}", models.Conversation),
    ("get", "/v1/messages/{messageId}/events", models.AuditTrail),
    ("get", "/v1/identities/{handle}/conversations", models.ConversationList),
    ("get", "/v1/identities/{handle}/messages", models.MessageSearch), ("post", "/v1/messages/{messageId}/cancel", models.Cancelled),
    ("get", "/v1/scheduled", models.ScheduledList), ("get", "/v1/drafts", models.DraftList),
    ("get", "/v1/drafts/{draftId}", models.Draft), ("post", "/v1/drafts/{draftId}/approve", models.ApprovedDraft),
    ("get", "/v1/events", models.EventPage), ("get", "/v1/messages/wait", models.WaitResult),
    ("get", "/v1/suppressions", models.SuppressionList), ("get", "/v1/suppressions/{address}", models.Suppression),
    ("post", "/v1/webhooks", models.WebhookCreated), ("get", "/v1/webhooks", models.WebhookList),
    ("get", "/v1/webhooks/{id}", models.Webhook), ("get", "/v1/webhooks/{id}/deliveries", models.DeliveryList),
    ("post", "/v1/webhooks/{id}/rotate-secret", models.SecretRotated),
]  # fmt: skip


def drift(model: type[BaseModel], schema: dict, components: dict, where: str) -> list[str]:
    """How `model` and the OpenAPI `schema` disagree: a field only one side has, one required on one side
    only, and the same for the models inside (a list's, a union's, an optional's)."""
    if "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[1]]
    ours = {(f.validation_alias or name): f for name, f in model.model_fields.items()}
    theirs = schema.get("properties", {})
    found = [f"{where}: {n} only in the client" for n in ours.keys() - theirs.keys()]
    found += [f"{where}: {n} only in the server" for n in theirs.keys() - ours.keys()]
    for name in ours.keys() & theirs.keys():
        required_here, required_there = ours[name].is_required(), name in schema.get("required", [])
        if required_here and not required_there:
            found.append(f"{where}.{name}: required by the client, optional on the server")
        inner = [a for a in _models(ours[name].annotation)]
        refs = [s for s in _schemas(theirs[name]) if "$ref" in s or "properties" in s]
        if inner and len(inner) == len(refs):
            for model_inner, schema_inner in zip(sorted(inner, key=lambda c: c.__name__), _by_name(refs, components, inner), strict=True):
                found += drift(model_inner, schema_inner, components, f"{where}.{name}")
        elif inner or refs:
            found.append(f"{where}.{name}: {len(inner)} models in the client, {len(refs)} on the server")
    return found


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models(arg)] if get_origin(annotation) else []


def _schemas(schema: dict) -> list[dict]:
    if "anyOf" in schema or "oneOf" in schema:
        return [s for part in schema.get("anyOf", schema.get("oneOf")) for s in _schemas(part)]
    if schema.get("type") == "array":
        return _schemas(schema.get("items", {}))
    return [schema]


def _by_name(refs: list[dict], components: dict, inner: list[type[BaseModel]]) -> list[dict]:
    """The server's schemas in the order of the client's models' names (a component's name ends in it)."""
    named = {r["$ref"].rsplit("/", 1)[1].rsplit("__", 1)[-1]: r for r in refs if "$ref" in r}
    return [named.get(m.__name__, refs[0]) for m in sorted(inner, key=lambda c: c.__name__)]


async def test_the_clients_models_match_the_servers_openapi(api: Api) -> None:
    status, doc, _ = await api.call("GET", "/openapi.json", key=None)
    assert status == 200
    components = doc["components"]["schemas"]
    found = []
    for method, path, model in ANSWERS:
        responses = doc["paths"][path][method]["responses"]
        [answer] = [r for code, r in responses.items() if code.startswith("2")]
        found += drift(model, answer["content"]["application/json"]["schema"], components, f"{method.upper()} {path}")
    assert not found, "\n".join(found)
    # The drift check itself catches a renamed field (either side).
    renamed = {**components["Identity"], "properties": {**components["Identity"]["properties"]}}
    renamed["properties"]["dailyLimit"] = renamed["properties"].pop("dailyCap")
    assert len(drift(models.Identity, renamed, components, "Identity")) == 2
    # Every route the client's methods call is one the server documents.
    documented = {_shape(method, p) for p, ops in doc["paths"].items() for method in ops}
    called = {_shape(c.method.lower(), c.path) for c in _every_call()}
    assert called <= documented, called - documented


PLACEHOLDER = "x"  # every argument of every method, in `_every_call`


def _shape(method: str, path: str) -> str:
    """`get /v1/identities/{}`: the route, whatever names its path parameters (or placeholders) have."""
    return f"{method} " + "/".join("{}" if part == PLACEHOLDER or part.startswith("{") else part for part in path.split("/"))


def _every_call() -> list[Call]:
    """The request of each of the client's methods, made with placeholder arguments."""
    calls: list[Call] = []

    class Recorder(_Operations):
        def _run(self, call: Call) -> None:
            calls.append(call)

    recorder = Recorder()
    for name in dir(_Operations):
        method = getattr(recorder, name)
        if name.startswith("_") or not callable(method):
            continue
        code = method.__func__.__code__
        method(*([PLACEHOLDER] * (code.co_argcount - 1)))
    return calls
