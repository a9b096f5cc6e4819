"""Replies by convId and affinity across a mailbox pool, on the wire."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import Api, Relay, eventually, new_org
from tests.integration.test_send import make_identity

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def send(api: Api, handle: str, body: dict) -> tuple[int, dict]:
    status, out, _ = await api.call("POST", f"/v1/identities/{handle}/send", body)
    return status, out


async def test_reply_by_conv_id_threads_from_the_same_mailbox(api: Api, relay: Relay) -> None:
    """A follow-up with only convId reaches the same recipient from the same mailbox, threaded, as `Re:`."""
    handle, _ = await make_identity(api, relay, mailboxes=3, daily_cap=10)
    _, first = await send(
        api, handle, {"to": "morgan@example.test", "subject": "Fleet rotation", "text": "Hi"}
    )
    m1 = first["messages"][0]
    status, r1 = await send(api, handle, {"convId": m1["convId"], "text": "Following up"})
    assert status == 202, r1
    status, r2 = await send(api, handle, {"convId": m1["convId"], "html": "<p>Friday at 10 works.</p>"})
    assert status == 202 and r2["remaining"] == 7
    for r in (r1, r2):
        [m] = r["messages"]
        assert m["to"] == "morgan@example.test" and m["convId"] == m1["convId"]
        assert m["account"] == m1["account"] and m["affinity"] == "existing"

    got = await relay.wait_for(3)
    by_id = {g.message["Message-ID"]: g for g in got}
    reply1, reply2 = by_id[r1["messages"][0]["id"]].message, by_id[r2["messages"][0]["id"]].message
    assert reply1["Subject"] == "Re: Fleet rotation" and reply2["Subject"] == "Re: Fleet rotation"
    assert reply1["In-Reply-To"] == m1["id"] and reply1["References"] == m1["id"]
    assert reply2["In-Reply-To"] == r1["messages"][0]["id"]
    assert reply2["References"] == f"{m1['id']} {r1['messages'][0]['id']}"
    assert {g.mail_from for g in got} == {m1["account"]["email"]}
    assert all(g.rcpt_tos == ["morgan@example.test"] for g in got)

    async def thread():
        status, conv, _ = await api.call("GET", f"/v1/conversations/{m1['convId']}")
        assert status == 200, (
            conv
        )  # a convId the API handed out is readable at once, even before it is projected
        return conv if [m["status"] for m in conv["messages"]] == ["sent"] * 3 else None

    conv = await eventually(thread)
    assert [m["subject"] for m in conv["messages"]] == [
        "Fleet rotation",
        "Re: Fleet rotation",
        "Re: Fleet rotation",
    ]
    assert [m["id"] for m in conv["messages"]] == [m1["id"], r1["messages"][0]["id"], r2["messages"][0]["id"]]


async def test_threading_headers_for_a_thread_that_started_elsewhere(api: Api, relay: Relay) -> None:
    """inReplyTo and references on a new send are carried to the relay."""
    handle, _ = await make_identity(api, relay)
    status, _ = await send(
        api,
        handle,
        {
            "to": "morgan@example.test",
            "subject": "Re: Fleet rotation",
            "text": "Following up...",
            "inReplyTo": "<original-message-id@northwind.test>",
            "references": ["<original-message-id@northwind.test>"],
        },
    )
    assert status == 202
    [got] = await relay.wait_for(1)
    assert got.message["In-Reply-To"] == "<original-message-id@northwind.test>"
    assert got.message["References"] == "<original-message-id@northwind.test>"
    assert got.message["Subject"] == "Re: Fleet rotation"


async def test_conv_id_of_another_identity_or_org_is_404(api: Api, operator: Api, relay: Relay) -> None:
    """Cross-identity replies are 404, as are unknown and malformed convIds."""
    handle_a, _ = await make_identity(api, relay)
    handle_b, _ = await make_identity(api, relay)
    _, sent = await send(api, handle_a, {"to": "x@example.test", "subject": "s", "text": "t"})
    conv = sent["messages"][0]["convId"]
    for h, key_api in ((handle_b, api), (handle_a, await new_org(operator))):
        status, body = await send(key_api, h, {"convId": conv, "text": "hi"})
        assert status == 404, body
    for bad in ("conv_00000000000000000000000000000000", "nonsense"):
        status, body = await send(api, handle_a, {"convId": bad, "text": "hi"})
        assert status == 404 and body["error"]["message"] == "Conversation not found"


async def test_affinity_new_existing_reassigned_and_replies_never_reroute(api: Api, relay: Relay) -> None:
    """Pausing the pinned mailbox re-pins a new send (`reassigned`) but rejects a reply in its thread."""
    handle, _ = await make_identity(api, relay, mailboxes=2)
    _, a = await send(api, handle, {"to": "lee@example.test", "subject": "One", "text": "1"})
    _, b = await send(api, handle, {"to": "lee@example.test", "subject": "Two", "text": "2"})
    first, second = a["messages"][0], b["messages"][0]
    assert (first["affinity"], second["affinity"]) == ("new", "existing")
    assert second["account"] == first["account"]

    status, _, _ = await api.call(
        "PATCH", f"/v1/identities/{handle}/mailboxes/{first['account']['id']}", {"health": "paused"}
    )
    assert status == 200
    status, c = await send(api, handle, {"to": "lee@example.test", "subject": "Three", "text": "3"})
    third = c["messages"][0]
    assert status == 202 and third["affinity"] == "reassigned" and third["account"] != first["account"]
    _, d = await send(api, handle, {"to": "lee@example.test", "subject": "Four", "text": "4"})
    assert d["messages"][0]["affinity"] == "existing" and d["messages"][0]["account"] == third["account"]

    status, reply = await send(api, handle, {"convId": first["convId"], "text": "still there?"})
    assert status == 429
    assert reply["messages"] == [
        {
            "to": "lee@example.test",
            "id": None,
            "status": "rejected",
            "convId": None,
            "affinity": None,
            "account": None,
            "reason": "mailbox_unavailable",
        }
    ]
    await relay.wait_for(4)
    assert len(relay.received) == 4


async def test_mailbox_hourly_limit_moves_sends_to_another_mailbox_then_rejects(
    api: Api, relay: Relay
) -> None:
    """A mailbox at its rolling-hour limit is skipped; with every mailbox at its limit the send is rejected."""
    handle = f"hourly-{uuid.uuid4().hex[:8]}@example.test"
    assert (await api.call("POST", "/v1/identities", {"handle": handle}))[0] == 201
    accounts = []
    for i in range(2):
        status, body, _ = await api.call(
            "POST",
            f"/v1/identities/{handle}/mailboxes",
            {
                "email": f"h{i}-{uuid.uuid4().hex[:6]}@tryacme.test",
                "smtp": relay.smtp_settings(),
                "hourlyLimit": 2,
            },
        )
        assert status == 201
        accounts.append(body["id"])
    used = []
    for i in range(4):
        status, body = await send(api, handle, {"to": f"p{i}@example.test", "subject": "s", "text": "t"})
        assert status == 202, body
        used.append(body["messages"][0]["account"]["id"])
    assert sorted(used) == sorted(accounts * 2)
    status, body = await send(api, handle, {"to": "p9@example.test", "subject": "s", "text": "t"})
    assert status == 429 and body["messages"][0]["reason"] == "mailbox_unavailable"
    await relay.wait_for(4)
