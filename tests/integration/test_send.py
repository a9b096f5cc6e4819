"""The walk-through on real infrastructure: HTTP send -> Kafka -> decide -> dispatch -> SMTP -> projection."""

from __future__ import annotations

import re
import uuid

import pytest

from tests.conftest import Api, Relay, eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def make_identity(
    api: Api, relay: Relay, *, daily_cap: int = 150, mailboxes: int = 1
) -> tuple[str, list[dict]]:
    handle = f"agent-{uuid.uuid4().hex[:8]}@example.test"
    status, body, _ = await api.call("POST", "/v1/identities", {"handle": handle, "dailyCap": daily_cap})
    assert status == 201, body
    accounts = []
    for i in range(mailboxes):
        status, body, _ = await api.call(
            "POST",
            f"/v1/identities/{handle}/mailboxes",
            {"email": f"sender{i}-{uuid.uuid4().hex[:6]}@tryacme.test", "smtp": relay.smtp_settings()},
        )
        assert status == 201, body
        accounts.append(body)
    return handle, accounts


async def test_send_new_conversation_end_to_end(api: Api, relay: Relay) -> None:
    """A send is answered in the seed's shape, reaches the relay as multipart MIME, and reads back as sent."""
    handle, [mailbox] = await make_identity(api, relay, daily_cap=150)
    to = "morgan@northwindrobotics.test"

    status, body, _ = await api.call(
        "POST",
        f"/v1/identities/{handle}/send",
        {
            "to": to,
            "subject": "Quick intro — fleet rotation",
            "text": "Hi Morgan, ...",
            "html": "<p>Hi Morgan, ...</p>",
        },
    )

    assert status == 202, body
    assert {k: body[k] for k in ("accepted", "rejected", "remaining", "dailyCap", "identity")} == {
        "accepted": 1,
        "rejected": 0,
        "remaining": 149,
        "dailyCap": 150,
        "identity": handle,
    }
    [m] = body["messages"]
    assert m["to"] == to and m["status"] == "accepted" and m["affinity"] == "new"
    assert m["account"] == {"id": mailbox["id"], "email": mailbox["email"]}
    assert re.fullmatch(r"<[0-9a-f-]{36}@tryacme\.test>", m["id"])
    assert re.fullmatch(r"conv_[0-9a-f]{32}", m["convId"])

    [got] = await relay.wait_for(1)
    assert got.mail_from == mailbox["email"] and got.rcpt_tos == [to]
    mime = got.message
    assert mime["From"] == mailbox["email"]
    assert mime["To"] == to
    assert mime["Subject"] == "Quick intro — fleet rotation"
    assert mime["Message-ID"] == m["id"]
    assert mime["Date"] is not None
    assert mime.get_content_type() == "multipart/alternative"
    parts = {p.get_content_type(): p.get_content().strip() for p in mime.iter_parts()}
    assert parts == {"text/plain": "Hi Morgan, ...", "text/html": "<p>Hi Morgan, ...</p>"}

    async def sent():
        status, conv, _ = await api.call("GET", f"/v1/conversations/{m['convId']}")
        assert status == 200, (
            conv
        )  # a convId the API handed out is readable at once, even before it is projected
        return conv if conv["messages"][0]["status"] == "sent" else None

    conv = await eventually(sent)
    assert conv["id"] == m["convId"] and conv["identity"] == handle and conv["counterpart"] == to
    assert conv["account"] == {"id": mailbox["id"], "email": mailbox["email"]}
    [msg] = conv["messages"]
    assert msg["id"] == m["id"] and msg["direction"] == "outbound" and msg["from"] == mailbox["email"]
    assert msg["to"] == [to] and msg["subject"] == "Quick intro — fleet rotation"
    assert msg["text"] == "Hi Morgan, ..." and msg["html"] == "<p>Hi Morgan, ...</p>"
    assert msg["sentAt"] is not None


async def test_second_send_to_same_recipient_reuses_pinned_mailbox(api: Api, relay: Relay) -> None:
    """Affinity: the first send pins a mailbox (`new`); the next one to that recipient reuses it (`existing`)."""
    handle, _ = await make_identity(api, relay, mailboxes=3)
    first = (
        await api.call(
            "POST", f"/v1/identities/{handle}/send", {"to": "pat@example.test", "subject": "One", "text": "1"}
        )
    )[1]["messages"][0]
    second = (
        await api.call(
            "POST", f"/v1/identities/{handle}/send", {"to": "PAT@example.test", "subject": "Two", "text": "2"}
        )
    )[1]["messages"][0]
    assert first["affinity"] == "new" and second["affinity"] == "existing"
    assert second["account"] == first["account"]
    assert second["convId"] != first["convId"]
    await relay.wait_for(2)
    assert {r.mail_from for r in relay.received} == {first["account"]["email"]}


async def test_each_recipient_of_an_array_is_its_own_message_and_conversation(api: Api, relay: Relay) -> None:
    """`to` as an array: one message and one conversation per recipient, each delivered separately."""
    handle, _ = await make_identity(api, relay)
    status, body, _ = await api.call(
        "POST",
        f"/v1/identities/{handle}/send",
        {"to": ["a@example.test", "b@example.test"], "subject": "Hi", "text": "x"},
    )
    assert status == 202 and body["accepted"] == 2 and body["remaining"] == 148
    assert [m["to"] for m in body["messages"]] == ["a@example.test", "b@example.test"]
    assert len({m["convId"] for m in body["messages"]}) == 2
    await relay.wait_for(2)
    assert sorted(r.rcpt_tos[0] for r in relay.received) == ["a@example.test", "b@example.test"]


async def test_daily_cap_rejects_with_429_when_nothing_is_accepted(api: Api, relay: Relay) -> None:
    """With the cap used up, a send is rejected `cap_exceeded` with 429 and is never dispatched."""
    handle, _ = await make_identity(api, relay, daily_cap=1)
    ok = await api.call(
        "POST", f"/v1/identities/{handle}/send", {"to": "c@example.test", "subject": "1", "text": "x"}
    )
    assert ok[0] == 202 and ok[1]["remaining"] == 0
    status, body, _ = await api.call(
        "POST", f"/v1/identities/{handle}/send", {"to": "d@example.test", "subject": "2", "text": "x"}
    )
    assert status == 429
    assert body["accepted"] == 0 and body["rejected"] == 1 and body["remaining"] == 0
    assert body["messages"] == [
        {
            "to": "d@example.test",
            "id": None,
            "status": "rejected",
            "convId": None,
            "affinity": None,
            "account": None,
            "reason": "cap_exceeded",
        }
    ]
    await relay.wait_for(1)
    assert [r.rcpt_tos for r in relay.received] == [["c@example.test"]]


async def test_a_conversation_is_readable_right_after_the_send(api: Api, relay: Relay) -> None:
    """Read-after-write: the convId a send returns can be read at once, though the view is built from the log."""
    handle, _ = await make_identity(api, relay)
    for i in range(5):
        _, body, _ = await api.call(
            "POST", f"/v1/identities/{handle}/send", {"to": f"n{i}@example.test", "subject": "s", "text": "t"}
        )
        status, conv, _ = await api.call("GET", f"/v1/conversations/{body['messages'][0]['convId']}")
        assert status == 200, conv
        assert conv["counterpart"] == f"n{i}@example.test" and len(conv["messages"]) == 1
