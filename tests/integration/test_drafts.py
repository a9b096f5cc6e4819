"""Drafts a person approves (SPEC 3.5), against the real stack: an identity with `requireApproval` sends
nothing, through any dialect, until a draft is approved; approving twice sends once; a `send` key cannot
approve its own mail; drafts are edited while pending, rejected with a reason, or cancelled by their
message's id, and none of those is ever sent."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook

from schemas import ids
from tests.conftest import Api, Receiver, Relay, eventually, through
from tests.integration.test_send import make_identity

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def approving(api: Api, relay: Relay) -> tuple[str, dict]:
    """An identity whose every send waits for approval."""
    handle, [mailbox] = await make_identity(api, relay)
    status, identity, _ = await api.call("PATCH", f"/v1/identities/{handle}", {"requireApproval": True})
    assert status == 200 and identity["requireApproval"] is True, identity
    return handle, mailbox


async def never_decided(db, message_id: str) -> bool:
    """Nothing of the message reached decide (no decision, no view of it)."""
    mid = ids.parse("message", message_id)
    return not await db.fetchval("SELECT true FROM messages WHERE id = $1", mid)


async def test_require_approval_holds_every_send_until_approved_and_approving_twice_sends_once(
    api: Api, relay: Relay, db
) -> None:
    handle, _ = await approving(api, relay)
    status, body, _ = await api.call(
        "POST", f"/v1/identities/{handle}/send", {"to": "lead@example.test", "subject": "Held", "text": "t"}
    )
    assert status == 202 and (body["accepted"], body["pendingApproval"]) == (0, 1), body
    [held] = body["messages"]
    assert held["status"] == "pending_approval" and held["draftId"].startswith("drf_"), held

    # A `send` key (the agent's) cannot approve its own mail; a key with the `approve` scope can.
    _, sender, _ = await api.call("POST", "/v1/api-keys", {"scopes": ["send", "read"]})
    status, refused, _ = await api.as_key(sender["apiKey"]).call("POST", f"/v1/drafts/{held['draftId']}/approve")
    assert status == 403 and "approve" in refused["error"]["message"], refused
    _, approver, _ = await api.call("POST", "/v1/api-keys", {"scopes": ["approve", "read"]})
    person = api.as_key(approver["apiKey"])

    assert relay.received == [] and await never_decided(db, held["messageId"])
    status, listed, _ = await person.call("GET", f"/v1/drafts?status=pending&identity={handle}")
    assert [d["id"] for d in listed["data"]] == [held["draftId"]], listed
    assert listed["data"][0]["to"] == ["lead@example.test"] and listed["data"][0]["subject"] == "Held"

    answers = await asyncio.gather(*(person.call("POST", f"/v1/drafts/{held['draftId']}/approve") for _ in range(3)))
    for status, approved, _ in answers:
        assert status == 202 and approved["accepted"] == 1 and approved["draft"]["status"] == "approved", approved
    assert {a[1]["messages"][0]["id"] for a in answers} == {answers[0][1]["messages"][0]["id"]}  # one message
    assert (await person.call("POST", f"/v1/drafts/{held['draftId']}/approve"))[0] == 202  # and again, later

    assert (await api.call("PATCH", f"/v1/identities/{handle}", {"requireApproval": False}))[0] == 200
    sent = await relay.before_marker(through(api, handle))
    assert [r.rcpt_tos for r in sent] == [["lead@example.test"]]  # once
    status, rejected, _ = await person.call("POST", f"/v1/drafts/{held['draftId']}/reject", {"reason": "late"})
    assert status == 409 and "approved" in rejected["error"]["message"], rejected


async def test_every_dialect_holds_its_sends_for_approval(api: Api, relay: Relay, db) -> None:
    email = f"desk-{uuid.uuid4().hex[:6]}@agents.example.test"
    _, inbox, _ = await api.call("POST", "/v1/inboxes", {"email": email, "smtp": relay.smtp_settings()})
    assert (await api.call("PATCH", f"/v1/identities/{email}", {"requireApproval": True}))[0] == 200
    status, sent, _ = await api.call(
        "POST", f"/v1/inboxes/{inbox['id']}/messages/send",
        {"to": ["ana@example.test"], "subject": "Pilot", "text": "t", "html": "<p>t</p>"},
    )  # fmt: skip
    assert status == 200 and sent["status"] == "pending_approval" and sent["draftId"], sent

    address = f"mb-{uuid.uuid4().hex[:8]}@agents.example.test"
    assert (await api.call("POST", "/mailboxes", {"email_address": address, "smtp": relay.smtp_settings()}))[0] == 201
    assert (await api.call("PATCH", f"/v1/identities/{address}", {"requireApproval": True}))[0] == 200
    status, item, _ = await api.call(
        "POST", f"/mailboxes/{address}/messages", {"recipients": {"to": ["bo@example.test"]}, "subject": "S", "body_text": "t"}
    )  # fmt: skip
    assert status == 201 and item["status"] == "pending_approval" and item["draft_id"], item

    # Held, and shown as such in each dialect's lists (its content, once approved).
    async def listed() -> bool:
        _, inbox_list, _ = await api.call("GET", f"/v1/inboxes/{inbox['id']}/messages")
        _, mailbox_list, _ = await api.call("GET", f"/mailboxes/{address}/messages")
        return [m["status"] for m in inbox_list] == ["pending_approval"] and [
            m["status"] for m in mailbox_list["items"]
        ] == ["pending_approval"]

    assert await eventually(listed, timeout=10)
    assert relay.received == []
    for draft in (sent["draftId"], item["draft_id"]):
        status, approved, _ = await api.call("POST", f"/v1/drafts/{draft}/approve")
        assert status == 202 and approved["accepted"] == 1, approved
    got = await relay.wait_for(2)
    assert sorted(r.rcpt_tos[0] for r in got) == ["ana@example.test", "bo@example.test"]


async def test_a_draft_is_edited_while_pending_and_one_rejected_or_cancelled_is_never_sent(
    api: Api, relay: Relay, receiver: Receiver
) -> None:
    status, hook, _ = await api.call(
        "POST", "/v1/webhooks",
        {"url": receiver.url("/drafts"), "events": ["draft.created", "draft.approved", "draft.rejected"]},
    )  # fmt: skip
    assert status == 201, hook
    handle, _ = await make_identity(api, relay)
    drafts = []
    for to in ("edited@example.test", "rejected@example.test", "cancelled@example.test"):
        status, draft, _ = await api.call(
            "POST", f"/v1/identities/{handle}/drafts", {"to": to, "subject": "First", "text": "first words"}
        )
        assert status == 201 and draft["status"] == "pending" and draft["id"].startswith("drf_"), draft
        drafts.append(draft)
    edited, rejected, cancelled = drafts

    status, changed, _ = await api.call("PATCH", f"/v1/drafts/{edited['id']}", {"subject": "Second", "text": "better"})
    assert status == 200 and (changed["subject"], changed["text"]) == ("Second", "better"), changed
    status, bad, _ = await api.call("PATCH", f"/v1/drafts/{edited['id']}", {"sendAt": "2020-01-01T00:00:00Z"})
    assert status == 400 and bad["error"]["message"].startswith("sendAt: is in the past"), bad

    status, no, _ = await api.call("POST", f"/v1/drafts/{rejected['id']}/reject", {"reason": "off-brand"})
    assert status == 200 and (no["status"], no["reason"]) == ("rejected", "off-brand"), no
    status, gone, _ = await api.call("POST", f"/v1/messages/{cancelled['messageIds'][0]}/cancel")
    assert status == 200 and gone["status"] == "cancelled", gone
    assert (await api.call("GET", f"/v1/drafts/{cancelled['id']}"))[1]["status"] == "cancelled"
    for done in (rejected, cancelled):
        status, refused, _ = await api.call("POST", f"/v1/drafts/{done['id']}/approve")
        assert status == 409, refused
    assert (await api.call("PATCH", f"/v1/drafts/{rejected['id']}", {"text": "x"}))[0] == 409

    # Scheduled from the draft: approving it schedules it, a few seconds ahead.
    at = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
    assert (await api.call("PATCH", f"/v1/drafts/{edited['id']}", {"sendAt": at.isoformat()}))[0] == 200
    status, approved, _ = await api.call("POST", f"/v1/drafts/{edited['id']}/approve")
    assert status == 202 and approved["scheduled"] == 1 and approved["messages"][0]["status"] == "scheduled", approved
    [got] = await relay.wait_for(1)
    assert datetime.now(UTC) >= at and got.rcpt_tos == ["edited@example.test"]
    assert got.message["Subject"] == "Second" and got.message.get_body(("plain",)).get_content().strip() == "better"
    assert len(await relay.before_marker(through(api, handle))) == 1
    assert (await api.call("GET", "/v1/drafts/drf_00000000000000000000000000000000"))[0] == 404

    # Told of by signed webhooks: three made, one rejected (with its reason), one approved.
    told = [Webhook(hook["secret"]).verify(r.body, r.headers) for r in await receiver.wait_for("/drafts", 5)]
    seen = sorted((t["type"], t["data"]["id"], t["data"]["status"]) for t in told)
    assert seen == sorted(
        [("draft.created", d["id"], "pending") for d in drafts]
        + [("draft.rejected", rejected["id"], "rejected"), ("draft.approved", edited["id"], "approved")]
    ), seen
    made = next(t["data"] for t in told if t["type"] == "draft.created" and t["data"]["id"] == edited["id"])
    assert made["to"] == ["edited@example.test"] and made["identity"] == handle and made["subject"] == "First"
    assert next(t["data"]["reason"] for t in told if t["type"] == "draft.rejected") == "off-brand"
