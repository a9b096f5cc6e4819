"""The inboxes dialect's inboxes (SPEC 3.2) on the real stack, and the seed's own client against them."""

from __future__ import annotations

import asyncio
import json
import re
import uuid

import pytest
from standardwebhooks import Webhook

from tests.conftest import Api, Receiver, Relay, eventually, new_org

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

INBOX_ID = re.compile(r"inbox_[0-9a-f]{32}")


async def test_an_inbox_with_its_own_address_and_relay_is_an_identity_with_a_pool_of_one(
    api: Api, relay: Relay
) -> None:
    email = f"support-{uuid.uuid4().hex[:6]}@agents.example.test"
    status, inbox, _ = await api.call(
        "POST", "/v1/inboxes", {"email": email, "name": "Support bot", "smtp": relay.smtp_settings()}
    )
    assert status == 201, inbox
    assert INBOX_ID.fullmatch(inbox["id"]) and inbox["organizationId"].startswith("org_")
    assert (inbox["name"], inbox["email"]) == ("Support bot", email)
    assert inbox["createdAt"].endswith("Z") and inbox["updatedAt"].endswith("Z")

    assert (await api.call("GET", f"/v1/inboxes/{inbox['id']}"))[1] == inbox
    _, listed, _ = await api.call("GET", "/v1/inboxes")
    assert isinstance(listed, list) and inbox in listed

    # the same entity in the identities dialect: its handle, and one mailbox of the inbox's address
    status, identity, _ = await api.call("GET", f"/v1/identities/{email}")
    assert status == 200 and identity["id"].removeprefix("idn_") == inbox["id"].removeprefix("inbox_")
    _, pool, _ = await api.call("GET", f"/v1/identities/{email}/mailboxes")
    [mailbox] = pool["data"]
    assert mailbox["email"] == email and mailbox["smtp"]["port"] == relay.port


async def test_an_inbox_with_only_a_name_gets_the_default_domain_and_relay(
    api: Api, default_relay: Relay
) -> None:
    status, inbox, _ = await api.call("POST", "/v1/inboxes", {"name": "Sales Agent #2"})
    assert status == 201, inbox
    assert re.fullmatch(r"sales-agent-2-[0-9a-f]{6}@inboxes\.example\.test", inbox["email"]), inbox
    _, pool, _ = await api.call("GET", f"/v1/identities/{inbox['email']}/mailboxes")
    assert [m["smtp"]["port"] for m in pool["data"]] == [default_relay.port]
    status, again, _ = await api.call("POST", "/v1/inboxes", {})
    assert status == 201 and again["email"].startswith("inbox-") and again["name"] is None


async def test_an_identity_created_in_the_identities_dialect_is_an_inbox(api: Api) -> None:
    handle = f"agent-{uuid.uuid4().hex[:6]}@example.test"
    assert (await api.call("POST", "/v1/identities", {"handle": handle}))[0] == 201
    _, listed, _ = await api.call("GET", "/v1/inboxes")
    assert handle in [i["email"] for i in listed]


async def test_missing_foreign_and_deleted_inboxes_are_404_with_the_seeds_string(
    api: Api, operator: Api
) -> None:
    other = await new_org(operator)
    _, theirs, _ = await other.call("POST", "/v1/inboxes", {"name": "theirs"})
    for inbox_id in (theirs["id"], "inbox_" + uuid.uuid4().hex, "not-an-id"):
        status, body, _ = await api.call("GET", f"/v1/inboxes/{inbox_id}")
        assert status == 404 and body == {"error": "not_found", "message": "Inbox not found"}, body
        assert (await api.call("DELETE", f"/v1/inboxes/{inbox_id}"))[0] == 404

    status, gone, _ = await other.call("DELETE", f"/v1/inboxes/{theirs['id']}")
    assert status == 200 and gone == theirs
    assert (await other.call("GET", f"/v1/inboxes/{theirs['id']}"))[0] == 404
    assert theirs["email"] not in [i["email"] for i in (await other.call("GET", "/v1/inboxes"))[1]]


async def test_bad_inbox_requests_are_400_and_a_taken_address_409_in_the_dialects_shape(api: Api) -> None:
    status, body, _ = await api.call("POST", "/v1/inboxes", {"email": "not-an-address"})
    assert status == 400 and body["error"] == "invalid_request" and body["message"].startswith("email:"), body
    status, body, _ = await api.call("POST", "/v1/inboxes", {"name": "x", "extra": 1})
    assert status == 400 and body["message"].startswith("extra:"), body
    _, first, _ = await api.call("POST", "/v1/inboxes", {"name": "dup"})
    status, body, _ = await api.call("POST", "/v1/inboxes", {"email": first["email"]})
    assert status == 409 and body["error"] == "conflict", body


async def test_the_seeds_own_client_manages_inboxes_unchanged(api: Api) -> None:
    """sendook-mcp (PyPI), written for the seed's API, pointed at sendstream: its inbox tools work."""
    import sendook_mcp  # noqa: PLC0415 - configured below, as its environment variables would

    sendook_mcp.API_BASE_URL, sendook_mcp.API_KEY = api.base, api.key
    created = json.loads(
        await sendook_mcp.sendook_create_inbox(sendook_mcp.CreateInboxInput(name="MCP agent"))
    )
    assert created["success"] and created["inbox"]["email"].endswith("@inboxes.example.test"), created
    inbox_id = created["inbox"]["id"]

    listed = json.loads(
        await sendook_mcp.sendook_list_inboxes(sendook_mcp.ListInboxesInput(response_format="json"))
    )
    assert inbox_id in [i["id"] for i in listed["inboxes"]]
    got = json.loads(await sendook_mcp.sendook_get_inbox(sendook_mcp.InboxIdInput(inbox_id=inbox_id)))
    assert got["inbox"] == created["inbox"]
    deleted = json.loads(await sendook_mcp.sendook_delete_inbox(sendook_mcp.InboxIdInput(inbox_id=inbox_id)))
    assert deleted["success"] and deleted["deleted_inbox"]["id"] == inbox_id
    missing = await sendook_mcp.sendook_get_inbox(sendook_mcp.InboxIdInput(inbox_id=inbox_id))
    assert missing.startswith("Error: Resource not found - Inbox not found"), missing


MESSAGE_FIELDS = {"id", "organizationId", "inboxId", "threadId", "fromInboxId", "from", "to", "cc", "bcc", "subject",
                  "text", "html", "labels", "attachments", "externalMessageId", "status", "reason", "createdAt",
                  "updatedAt", "toInboxId", "replyText", "autoReply", "authentication"}  # fmt: skip


async def test_a_send_to_to_cc_and_bcc_is_one_message_and_counts_every_recipient(
    api: Api, relay: Relay
) -> None:
    """One message: a Cc header, no Bcc header anywhere, every address in the envelope; the cap counts 4."""
    email = f"sales-{uuid.uuid4().hex[:6]}@agents.example.test"
    _, inbox, _ = await api.call("POST", "/v1/inboxes", {"email": email, "smtp": relay.smtp_settings()})
    body = {"to": ["a@example.test", "b@example.test"], "cc": ["c@example.test"], "bcc": ["hidden@example.test"],
            "subject": "Quarterly numbers", "text": "Numbers attached.", "html": "<p>Numbers attached.</p>",
            "labels": ["finance"]}  # fmt: skip
    status, message, _ = await api.call("POST", f"/v1/inboxes/{inbox['id']}/messages/send", body)
    assert status == 200, message
    assert set(message) == MESSAGE_FIELDS
    assert message["id"].startswith("msg_") and message["threadId"].startswith("thread_")
    assert message["inboxId"] == message["fromInboxId"] == inbox["id"] and message["from"] == email
    assert (message["to"], message["cc"], message["bcc"]) == (body["to"], body["cc"], body["bcc"])
    assert message["status"] == "sent" and message["labels"] == ["finance"] and message["attachments"] == []
    assert re.fullmatch(r"<[0-9a-f-]{36}@agents\.example\.test>", message["externalMessageId"])

    [got] = await relay.wait_for(1)
    await asyncio.sleep(0.3)
    assert len(relay.received) == 1  # one message, not one per recipient
    assert sorted(got.rcpt_tos) == sorted([*body["to"], *body["cc"], *body["bcc"]])
    head = got.data.split(b"\r\n\r\n", 1)[0]
    assert got.message["To"] == "a@example.test, b@example.test" and got.message["Cc"] == "c@example.test"
    assert b"hidden@example.test" not in got.data and b"\r\nBcc:" not in head
    assert got.message["Message-ID"] == message["externalMessageId"]

    # every recipient counted against the identity's daily cap (150): 4, then 1 more
    status, after, _ = await api.call(
        "POST", f"/v1/identities/{email}/send", {"to": "z@example.test", "subject": "s", "text": "t"}
    )
    assert status == 202 and after["remaining"] == 150 - 4 - 1, after


async def test_inbox_send_errors_in_the_seeds_words(api: Api, relay: Relay) -> None:
    _, inbox, _ = await api.call("POST", "/v1/inboxes", {"name": "errs", "smtp": relay.smtp_settings()})
    base = {"to": ["a@example.test"], "subject": "s", "text": "t", "html": "<p>t</p>"}
    status, body, _ = await api.call("POST", f"/v1/inboxes/inbox_{uuid.uuid4().hex}/messages/send", base)
    assert status == 404 and body == {"error": "not_found", "message": "Inbox not found"}
    for bad, field in (({"to": []}, "to"), ({"to": ["x"]}, "to[0]"), ({"cc": ["a@example.test"]}, "listed more"),
                       ({"subject": "a\nb"}, "subject")):  # fmt: skip
        status, body, _ = await api.call("POST", f"/v1/inboxes/{inbox['id']}/messages/send", {**base, **bad})
        assert status == 400 and field in body["message"], body
    assert relay.received == []


async def new_inbox(api: Api, relay: Relay) -> dict:
    email = f"desk-{uuid.uuid4().hex[:6]}@agents.example.test"
    status, inbox, _ = await api.call("POST", "/v1/inboxes", {"email": email, "smtp": relay.smtp_settings()})
    assert status == 201, inbox
    return inbox


async def send_from(api: Api, inbox: dict, to: str, subject: str, text: str) -> dict:
    status, message, _ = await api.call(
        "POST", f"/v1/inboxes/{inbox['id']}/messages/send",
        {"to": [to], "subject": subject, "text": text, "html": f"<p>{text}</p>"},
    )  # fmt: skip
    assert status == 200 and message["status"] == "sent", message
    return message


async def listed(api: Api, inbox: dict, query: str | None = None) -> list[dict]:
    path = f"/v1/inboxes/{inbox['id']}/messages" + (f"?query={query}" if query is not None else "")
    status, body, _ = await api.call("GET", path)
    assert status == 200 and isinstance(body, list), body
    return body


async def test_search_finds_by_subject_text_and_sender_and_nothing_else(
    api: Api, operator: Api, relay: Relay
) -> None:
    inbox = await new_inbox(api, relay)
    first = await send_from(api, inbox, "ana@example.test", "Quarterly numbers", "the pipeline grew")
    second = await send_from(api, inbox, "bo@example.test", "Lunch on Friday", "bring the quarterly deck")
    await eventually(lambda: _count(api, inbox, 2), timeout=10)

    assert [m["id"] for m in await listed(api, inbox)] == [second["id"], first["id"]]  # newest first
    assert [m["id"] for m in await listed(api, inbox, "quarterly")] == [
        first["id"],
        second["id"],
    ]  # subject first
    assert [m["id"] for m in await listed(api, inbox, "pipeline")] == [first["id"]]  # a word of the text
    assert [m["id"] for m in await listed(api, inbox, "quart")] == [
        first["id"],
        second["id"],
    ]  # last word: prefix
    assert [m["id"] for m in await listed(api, inbox, "friday lunch")] == [second["id"]]
    assert {m["id"] for m in await listed(api, inbox, inbox["email"].split("@")[0])} == {
        first["id"],
        second["id"],
    }
    assert await listed(api, inbox, "absentword") == []
    assert await listed(api, inbox, "!!!") == []

    other = await new_org(operator)
    _, theirs, _ = await other.call("POST", "/v1/inboxes", {"name": "other", "smtp": relay.smtp_settings()})
    await send_from(other, theirs, "x@example.test", "Quarterly numbers", "theirs")
    await eventually(lambda: _count(other, theirs, 1), timeout=10)
    assert {m["inboxId"] for m in await listed(api, inbox, "quarterly")} == {inbox["id"]}
    status, body, _ = await api.call("GET", f"/v1/inboxes/{theirs['id']}/messages?query=quarterly")
    assert status == 404 and body["message"] == "Inbox not found"


async def _count(api: Api, inbox: dict, n: int) -> bool:
    """At least `n` messages of the inbox are in the view, decided (with their sender and Message-ID)."""
    return len([m for m in await listed(api, inbox) if m["externalMessageId"]]) >= n


async def test_get_a_message_whole_and_another_inboxs_message_is_404(api: Api, relay: Relay) -> None:
    inbox, other = await new_inbox(api, relay), await new_inbox(api, relay)
    sent = await send_from(api, inbox, "ana@example.test", "Hello", "Hi Ana")

    async def whole():
        status, m, _ = await api.call("GET", f"/v1/inboxes/{inbox['id']}/messages/{sent['id']}")
        return status == 200 and m

    message = await eventually(whole, timeout=10)
    assert set(message) == MESSAGE_FIELDS
    assert (message["subject"], message["text"], message["html"]) == ("Hello", "Hi Ana", "<p>Hi Ana</p>")
    assert message["threadId"] == sent["threadId"] and message["from"] == inbox["email"]
    status, body, _ = await api.call("GET", f"/v1/inboxes/{other['id']}/messages/{sent['id']}")
    assert status == 404 and body == {"error": "not_found", "message": "Message not found"}


async def test_a_reply_threads_to_the_original_recipient_from_the_same_inbox(api: Api, relay: Relay) -> None:
    inbox = await new_inbox(api, relay)
    sent = await send_from(api, inbox, "ana@example.test", "Proposal", "Here it is")
    [original] = await relay.wait_for(1)
    await eventually(lambda: _count(api, inbox, 1), timeout=10)
    for _ in range(2):  # a reply to the reply's subject still has one "Re:"
        status, reply, _ = await api.call(
            "POST",
            f"/v1/inboxes/{inbox['id']}/messages/{sent['id']}/reply",
            {"text": "Any news?", "html": "<p>Any news?</p>"},
        )
        assert status == 200, reply
        assert reply["threadId"] == sent["threadId"] and reply["inboxId"] == inbox["id"]
        assert reply["to"] == ["ana@example.test"] and reply["subject"] == "Re: Proposal", reply
    received = await relay.wait_for(3)
    first_reply = received[1].message
    assert (
        first_reply["Subject"] == "Re: Proposal"
        and first_reply["In-Reply-To"] == original.message["Message-ID"]
    )
    assert original.message["Message-ID"] in first_reply["References"]
    assert first_reply["From"] == inbox["email"]

    async def thread_of_three():
        status, thread, _ = await api.call("GET", f"/v1/inboxes/{inbox['id']}/threads/{sent['threadId']}")
        decided = status == 200 and [m for m in thread["messages"] if m["externalMessageId"]]
        return decided and len(decided) == 3 and thread  # all three decided (and so with their subjects)

    thread = await eventually(thread_of_three, timeout=10)
    assert set(thread) == {"id", "organizationId", "inboxId", "subject", "messages", "createdAt", "updatedAt"}
    assert thread["id"] == sent["threadId"] and thread["subject"] == "Proposal"
    assert thread["inboxId"] == inbox["id"] and thread["organizationId"] == inbox["organizationId"]
    assert [m["subject"] for m in thread["messages"]] == ["Proposal", "Re: Proposal", "Re: Proposal"]
    _, threads, _ = await api.call("GET", f"/v1/inboxes/{inbox['id']}/threads")
    assert [t["id"] for t in threads] == [sent["threadId"]]
    status, body, _ = await api.call("GET", f"/v1/inboxes/{inbox['id']}/threads/thread_{uuid.uuid4().hex}")
    assert status == 404 and body["message"] == "Thread not found"
    status, body, _ = await api.call(
        "POST", f"/v1/inboxes/{inbox['id']}/messages/msg_{uuid.uuid4().hex}/reply", {"text": "t", "html": "h"}
    )
    assert status == 404 and body["message"] == "Message not found"


async def test_the_seeds_own_client_sends_replies_reads_searches_and_browses_threads(
    api: Api, relay: Relay
) -> None:
    """sendook-mcp's message and thread tools against sendstream, unchanged."""
    import sendook_mcp  # noqa: PLC0415 - configured below, as its environment variables would

    sendook_mcp.API_BASE_URL, sendook_mcp.API_KEY = api.base, api.key
    inbox = await new_inbox(api, relay)
    sent = json.loads(await sendook_mcp.sendook_send_message(sendook_mcp.SendMessageInput(
        inbox_id=inbox["id"], to=["lead@example.test"], subject="Pilot next week", text="Shall we start Monday?",
        cc=["boss@example.test"], labels=["pilot"])))  # fmt: skip
    assert sent["success"], sent
    await eventually(lambda: _count(api, inbox, 1), timeout=10)
    replied = json.loads(await sendook_mcp.sendook_reply_to_message(sendook_mcp.ReplyToMessageInput(
        inbox_id=inbox["id"], message_id=sent["message_id"], text="Following up.")))  # fmt: skip
    assert replied["success"] and replied["reply_message_id"].startswith("msg_"), replied
    await eventually(lambda: _count(api, inbox, 2), timeout=10)

    found = json.loads(await sendook_mcp.sendook_list_messages(sendook_mcp.ListMessagesInput(
        inbox_id=inbox["id"], query="pilot", response_format="json")))  # fmt: skip
    assert sent["message_id"] in [m["id"] for m in found["messages"]], found
    got = json.loads(await sendook_mcp.sendook_get_message(sendook_mcp.GetMessageInput(
        inbox_id=inbox["id"], message_id=sent["message_id"], response_format="json")))  # fmt: skip
    assert json.dumps(got).count("Shall we start Monday?") >= 1, got
    threads = json.loads(await sendook_mcp.sendook_list_threads(sendook_mcp.ListThreadsInput(
        inbox_id=inbox["id"], response_format="json")))  # fmt: skip
    [thread] = threads["threads"]
    one = json.loads(await sendook_mcp.sendook_get_thread(sendook_mcp.GetThreadInput(
        inbox_id=inbox["id"], thread_id=thread["id"], response_format="json")))  # fmt: skip
    assert [m["subject"] for m in one["thread"]["messages"]] == ["Pilot next week", "Re: Pilot next week"]


async def test_the_101st_send_in_an_hour_is_429_across_two_ingress_processes(
    api: Api, operator: Api, relay: Relay, stack, service_env: dict
) -> None:
    """Sends and replies share 100 an hour per organization, counted across processes; a replay of an
    answered request costs nothing; another organization is not held back."""
    from devstack.infra import free_port  # noqa: PLC0415
    from devstack.local import wait_ready  # noqa: PLC0415

    port = free_port()
    stack.start("ingress-b", ["-m", "services.ingress"], env={"SENDSTREAM_HTTP_PORT": str(port)})
    try:
        await asyncio.to_thread(wait_ready, f"http://127.0.0.1:{port}/readyz", 60, stack)
        other_process = Api(api.session, f"http://127.0.0.1:{port}", api.key)
        inbox = await new_inbox(api, relay)
        body = {"to": ["r@example.test"], "subject": "s", "text": "t", "html": "<p>t</p>"}
        path = f"/v1/inboxes/{inbox['id']}/messages/send"

        async def one(i: int) -> int:
            client = api if i % 2 else other_process
            return (await client.call("POST", path, body, headers={"Idempotency-Key": f"rl-{i}"}))[0]

        statuses = []
        for start in range(0, 100, 20):
            statuses += await asyncio.gather(*(one(i) for i in range(start, start + 20)))
        assert statuses == [200] * 100
        for client in (api, other_process):
            status, error, headers = await client.call("POST", path, body)
            assert status == 429 and error["error"] == "rate_limited", error
            assert 1 <= int(headers["Retry-After"]) <= 3600 and "100 requests per hour" in error["message"]
        status, _, headers = await other_process.call("POST", path, body, headers={"Idempotency-Key": "rl-7"})
        assert status == 200 and headers["Idempotent-Replayed"] == "true"  # a replay is not a new send

        theirs = await new_org(operator)
        their_inbox = await new_inbox(theirs, relay)
        assert (await theirs.call("POST", f"/v1/inboxes/{their_inbox['id']}/messages/send", body))[0] == 200
    finally:
        stack.stop("ingress-b")


async def test_message_sent_webhooks_show_the_message_as_the_inboxes_dialect_does(
    api: Api, relay: Relay, receiver: Receiver
) -> None:
    """The seed's `message.sent`, for a send and for a reply: `data` is the message object of this dialect
    (the identities dialect's sends keep their own shape: tests/integration/test_webhooks.py)."""
    status, hook, _ = await api.call(
        "POST", "/v1/webhooks", {"url": receiver.url("/inboxes"), "events": ["message.sent"]}
    )
    assert status == 201, hook
    inbox = await new_inbox(api, relay)
    body = {"to": ["ana@example.test"], "cc": ["bo@example.test"], "subject": "Terms", "text": "See terms.",
            "html": "<p>See terms.</p>", "labels": ["deal"],
            "attachments": [{"name": "terms.txt", "contentType": "text/plain", "content": "VGVybXM="}]}  # fmt: skip
    status, sent, _ = await api.call("POST", f"/v1/inboxes/{inbox['id']}/messages/send", body)
    assert status == 200, sent
    [first] = await receiver.wait_for("/inboxes", 1)
    payload = Webhook(hook["secret"]).verify(first.body, first.headers)
    assert payload["type"] == "message.sent"
    data = payload["data"]
    assert set(data) == MESSAGE_FIELDS
    assert {k: data[k] for k in ("id", "inboxId", "threadId", "from", "to", "cc", "subject", "externalMessageId")} == {
        k: sent[k] for k in ("id", "inboxId", "threadId", "from", "to", "cc", "subject", "externalMessageId")
    }  # fmt: skip
    assert (data["status"], data["text"], data["labels"]) == ("sent", "See terms.", ["deal"])
    assert [(a["name"], a["size"]) for a in data["attachments"]] == [("terms.txt", 5)]

    await eventually(lambda: _count(api, inbox, 1), timeout=10)
    status, reply, _ = await api.call(
        "POST",
        f"/v1/inboxes/{inbox['id']}/messages/{sent['id']}/reply",
        {"text": "Any news?", "html": "<p>?</p>"},
    )
    assert status == 200, reply
    [_, second] = await receiver.wait_for("/inboxes", 2)
    data = Webhook(hook["secret"]).verify(second.body, second.headers)["data"]
    assert (data["id"], data["threadId"], data["subject"], data["status"]) == (
        reply["id"], sent["threadId"], "Re: Terms", "sent"
    )  # fmt: skip
