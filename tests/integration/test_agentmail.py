"""The AgentMail dialect (issue 27), judged by AgentMail's own Python SDK (`agentmail` 2.0.18 from the
registry, unchanged) pointed at the test stack: inboxes, a send between two hosted inboxes under an
Idempotency-Key, the message and its thread read back on both sides, pages, and the SDK's own errors."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage

import aiosmtplib
import pytest
import svix.webhooks
from agentmail import (
    AgentMailEnvironment,
    AsyncAgentMail,
    Error,
    MessageReceivedEvent,
    SendAttachment,
    Subscribe,
    Subscribed,
)
from agentmail.core.api_error import ApiError
from agentmail.errors import ConflictError, NotFoundError, ValidationError
from agentmail.inboxes import CreateInboxRequest
from agentmail.messages.errors.message_rejected_error import MessageRejectedError

from services.common.domain.webhooks.signing import new_secret as signing_secret
from tests.conftest import Api, Receiver, Relay, deliver, eventually
from tests.integration.test_inbound import reply_to

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def sdk(api: Api) -> AsyncAgentMail:
    """The SDK as an agent points it at a server of its own: one URL (and no retries to wait through)."""
    ws = api.base.replace("http://", "ws://")
    return AsyncAgentMail(api_key=api.key, environment=AgentMailEnvironment(http=api.base, websockets=ws))


async def test_the_sdk_creates_inboxes_sends_once_per_key_and_reads_the_message_and_thread_back(api: Api) -> None:
    client = sdk(api)
    tag = uuid.uuid4().hex[:6]
    sender = await client.inboxes.create(request=CreateInboxRequest(username=f"agent-{tag}", client_id=f"a-{tag}"))
    again = await client.inboxes.create(request=CreateInboxRequest(username=f"agent-{tag}", client_id=f"a-{tag}"))
    assert again.inbox_id == sender.inbox_id and sender.email == f"agent-{tag}@inboxes.example.test"
    receiver = await client.inboxes.create(request=CreateInboxRequest(display_name="Desk"))
    assert receiver.display_name == "Desk" and receiver.inbox_id != sender.inbox_id
    listed = await client.inboxes.list(limit=100)
    assert {sender.inbox_id, receiver.inbox_id} <= {i.inbox_id for i in listed.inboxes}

    sent = [
        await client.inboxes.messages.send(
            sender.inbox_id, to=receiver.email, subject=f"Hello {tag}", text="Are you there?", idempotency_key=f"k-{tag}"
        )
        for _ in range(2)
    ]
    assert sent[0].message_id == sent[1].message_id and sent[0].thread_id  # one message

    async def arrived():
        page = await client.inboxes.messages.list(receiver.inbox_id)
        return page if page.count else None

    page = await eventually(arrived, timeout=20)
    [item] = page.messages
    assert item.subject == f"Hello {tag}" and item.from_ == sender.email and "received" in item.labels
    message = await client.inboxes.messages.get(receiver.inbox_id, item.message_id)
    assert message.text == "Are you there?" and message.to == [receiver.email]
    thread = await client.inboxes.threads.get(receiver.inbox_id, item.thread_id)
    assert [m.message_id for m in thread.messages] == [item.message_id] and thread.message_count == 1
    threads = await client.inboxes.threads.list(receiver.inbox_id)
    assert [t.thread_id for t in threads.threads] == [item.thread_id]
    ours = await client.inboxes.messages.list(sender.inbox_id)
    assert [m.message_id for m in ours.messages] == [sent[0].message_id] and ours.messages[0].labels == ["sent"]

    renamed = await client.inboxes.update(receiver.inbox_id, display_name="Front desk")
    assert renamed.display_name == "Front desk"


async def test_the_sdk_raises_its_own_errors_for_404_and_400(api: Api) -> None:
    client = sdk(api)
    with pytest.raises(NotFoundError) as missing:
        await client.inboxes.get("nobody@inboxes.example.test")
    assert missing.value.body.name == "NotFoundError" and "Inbox not found" in missing.value.body.message
    inbox = await client.inboxes.create()
    with pytest.raises(ValidationError) as invalid:
        await client.inboxes.messages.send(inbox.inbox_id, to="not an address", subject="s", text="t")
    assert invalid.value.status_code == 400 and "to" in invalid.value.body.message
    with pytest.raises(ApiError) as unauthorised:
        await AsyncAgentMail(api_key="sk_wrong", environment=AgentMailEnvironment(http=api.base, websockets="")).inboxes.list()
    assert unauthorised.value.status_code == 401


async def test_the_sdk_replies_replies_to_all_forwards_and_labels_in_the_thread(
    api: Api, default_relay: Relay, inbound: int
) -> None:
    """An inbox made without a relay of its own sends through the operator's default relay."""
    relay, client = default_relay, sdk(api)
    before = len(relay.received)
    tag = uuid.uuid4().hex[:6]
    desk = await client.inboxes.create(request=CreateInboxRequest(username=f"desk-{tag}"))
    first = await client.inboxes.messages.send(
        desk.inbox_id, to=["ana@example.test"], cc=["bo@example.test"], subject=f"Plan {tag}", text="Monday?"
    )
    [sent] = (await relay.wait_for(before + 1))[before:]
    answer = reply_to(sent.message, "ana@example.test", desk.email, "Monday works.")
    answer["Cc"] = "bo@example.test"
    await deliver(inbound, answer, "ana@example.test", [desk.email])

    async def received():
        page = await client.inboxes.messages.list(desk.inbox_id)
        return next((m for m in page.messages if "received" in m.labels), None)

    theirs = await eventually(received, timeout=20)
    assert theirs.thread_id == first.thread_id and "unread" in theirs.labels

    mine = await client.inboxes.messages.reply(desk.inbox_id, theirs.message_id, text="Great, see you then.")
    everyone = await client.inboxes.messages.reply_all(desk.inbox_id, theirs.message_id, text="Adding everyone.")
    onward = await client.inboxes.messages.forward(
        desk.inbox_id, theirs.message_id, to=["cy@example.test"], text="FYI"
    )
    assert mine.thread_id == everyone.thread_id == first.thread_id and onward.thread_id != first.thread_id
    got = [r for r in (await relay.wait_for(before + 4))[before + 1 :] if tag in str(r.message["Subject"])]
    by_subject = {str(r.message["Subject"]): r for r in got}
    assert sorted(by_subject) == [f"Fwd: Re: Plan {tag}", f"Re: Plan {tag}"]
    replies = [r for r in got if str(r.message["Subject"]) == f"Re: Plan {tag}"]
    assert sorted(sorted(r.rcpt_tos) for r in replies) == [["ana@example.test"], ["ana@example.test", "bo@example.test"]]
    assert all(r.message["In-Reply-To"] == answer["Message-ID"] for r in replies)
    forwarded = by_subject[f"Fwd: Re: Plan {tag}"]
    assert forwarded.rcpt_tos == ["cy@example.test"] and "Monday works." in forwarded.message.get_body(("plain",)).get_content()

    labelled = await client.inboxes.messages.update(
        desk.inbox_id, theirs.message_id, add_labels=["lead", "hot"], remove_labels="unread"
    )
    assert labelled.labels == ["received", "lead", "hot"]
    again = await client.inboxes.messages.update(desk.inbox_id, theirs.message_id, remove_labels=["hot"])
    assert again.labels == ["received", "lead"]
    assert (await client.inboxes.messages.get(desk.inbox_id, theirs.message_id)).labels == ["received", "lead"]


async def test_120_messages_page_by_page_token_without_repeats_and_a_reused_key_is_a_conflict(api: Api) -> None:
    client = sdk(api)
    inbox = await client.inboxes.create()
    sent = await asyncio.gather(
        *(client.inboxes.messages.send(inbox.inbox_id, to=f"p{i}@example.test", subject=f"#{i}", text="t") for i in range(120))
    )

    async def all_pages() -> list[str] | None:  # the lists are a projection: a send shows in it shortly after
        seen, token = [], None
        while True:
            page = await client.inboxes.messages.list(inbox.inbox_id, limit=50, page_token=token)
            seen += [m.message_id for m in page.messages]
            if not (token := page.next_page_token):
                return seen if len(set(seen)) == 120 else None

    seen = await eventually(all_pages, timeout=20, interval=0.5)
    assert len(seen) == len(set(seen)) == 120 and set(seen) == {s.message_id for s in sent}

    key = f"k-{uuid.uuid4().hex[:6]}"
    await client.inboxes.messages.send(inbox.inbox_id, to="a@example.test", subject="s", text="t", idempotency_key=key)
    with pytest.raises(ConflictError):
        await client.inboxes.messages.send(
            inbox.inbox_id, to="b@example.test", subject="s", text="t", idempotency_key=key,
            request_options={"max_retries": 0},
        )  # fmt: skip


async def test_a_sender_on_the_block_list_is_refused_and_taken_off_it_is_received(api: Api, inbound: int) -> None:
    client = sdk(api)
    inbox = await client.inboxes.create()
    spammer = f"spam-{uuid.uuid4().hex[:6]}@example.test"
    entry = await client.lists.create("receive", "block", entry=spammer, reason="spam")
    assert (entry.entry, entry.list_type, entry.entry_type) == (spammer, "block", "email")
    assert spammer in [e.entry for e in (await client.lists.list("receive", "block")).entries]
    assert (await client.lists.get("receive", "block", spammer)).entry == spammer

    letter = EmailMessage()
    letter["From"], letter["To"], letter["Subject"] = spammer, inbox.email, "Buy now"
    letter.set_content("cheap")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await deliver(inbound, letter, spammer, [inbox.email])
    assert [r.code for r in refused.value.recipients] == [550]

    await client.lists.delete("receive", "block", spammer)
    with pytest.raises(NotFoundError):
        await client.lists.get("receive", "block", spammer)
    await deliver(inbound, letter, spammer, [inbox.email])
    page = await eventually(lambda: _received(client, inbox.inbox_id), timeout=20)
    assert page.messages[0].from_ == spammer
    with pytest.raises(ValidationError):
        await client.lists.create("reply", "allow", entry=spammer)

    # The send block list: the organization's suppressions (read-your-writes: the next send is decided with it).
    await client.lists.create("send", "block", entry=spammer, reason="asked us to stop")
    assert (await client.lists.get("send", "block", spammer)).list_type == "block"
    with pytest.raises(MessageRejectedError) as refused_send:
        await client.inboxes.messages.send(inbox.inbox_id, to=spammer, subject="s", text="t")
    assert "suppressed" in refused_send.value.body.message
    status, suppression, _ = await api.call("GET", f"/v1/suppressions/{spammer}")
    assert status == 200 and suppression["reason"] == "manual"
    await client.lists.delete("send", "block", spammer)
    assert (await client.inboxes.messages.send(inbox.inbox_id, to=spammer, subject="s", text="t")).message_id


async def _received(client: AsyncAgentMail, inbox_id: str):
    page = await client.inboxes.messages.list(inbox_id)
    return page if page.count else None


async def test_a_webhook_made_by_the_sdk_delivers_agentmail_events_that_verify_with_svix(
    api: Api, default_relay: Relay, inbound: int, receiver: Receiver
) -> None:
    client = sdk(api)
    inbox, other = await client.inboxes.create(), await client.inboxes.create()
    tag = uuid.uuid4().hex[:6]
    events = ["message.received", "message.sent"]
    made = [
        await client.webhooks.create(url=receiver.url(f"/am-{tag}"), event_types=events, inbox_ids=[inbox.inbox_id], client_id=f"hook-{tag}")
        for _ in range(2)
    ]
    hook = made[0]
    assert made[1].webhook_id == hook.webhook_id and hook.secret.startswith("whsec_")
    assert hook.inbox_ids == [inbox.inbox_id] and (await client.webhooks.get(hook.webhook_id)).secret == hook.secret
    assert hook.webhook_id in [w.webhook_id for w in (await client.webhooks.list()).webhooks]

    letter = EmailMessage()
    letter["From"], letter["To"], letter["Subject"] = "lee@example.test", inbox.email, f"Quote {tag}"
    letter.set_content("How much for 40 units?")
    await deliver(inbound, letter, "lee@example.test", [inbox.email, other.email])  # `other`'s is not subscribed
    [received] = await receiver.wait_for(f"/am-{tag}", 1)
    svix.webhooks.Webhook(hook.secret).verify(received.body, received.headers)  # raises unless it verifies
    assert received.headers["svix-id"] and "webhook-signature" not in received.headers
    event = received.json
    assert (event["type"], event["event_type"]) == ("event", "message.received")
    assert event["message"]["from"] == "lee@example.test" and event["message"]["text"].strip() == "How much for 40 units?"
    assert event["message"]["inbox_id"] == inbox.inbox_id
    assert event["thread"]["thread_id"] == event["message"]["thread_id"] and event["thread"]["message_count"] == 1

    sent = await client.inboxes.messages.send(inbox.inbox_id, to="lee@example.test", subject="Re", text="$40 each")
    [_, confirmed] = await receiver.wait_for(f"/am-{tag}", 2)
    svix.webhooks.Webhook(hook.secret).verify(confirmed.body, confirmed.headers)
    assert confirmed.json["event_type"] == "message.sent"
    assert confirmed.json["send"]["message_id"] == sent.message_id and confirmed.json["send"]["recipients"] == ["lee@example.test"]
    with pytest.raises(svix.webhooks.WebhookVerificationError):
        svix.webhooks.Webhook(signing_secret()).verify(confirmed.body, confirmed.headers)

    await client.webhooks.update(hook.webhook_id, enabled=False)
    assert (await client.webhooks.get(hook.webhook_id)).enabled is False
    await client.webhooks.delete(hook.webhook_id)
    with pytest.raises(NotFoundError):
        await client.webhooks.get(hook.webhook_id)
    with pytest.raises(ValidationError):
        await client.webhooks.create(url=receiver.url("/x"), event_types=["message.teleported"])


async def test_drafts_edited_and_sent_once_and_one_with_send_at_goes_out_when_due(api: Api, default_relay: Relay) -> None:
    client, relay = sdk(api), default_relay
    tag = uuid.uuid4().hex[:6]
    desk = await client.inboxes.create()
    draft = await client.inboxes.drafts.create(desk.inbox_id, to=[f"kim-{tag}@example.test"], subject=f"Offer {tag}", text="Draft one")
    assert draft.send_status is None and draft.to == [f"kim-{tag}@example.test"]
    again = await client.inboxes.drafts.create(desk.inbox_id, to=["x@example.test"], text="t", client_id=f"c-{tag}")
    assert (await client.inboxes.drafts.create(desk.inbox_id, to=["x@example.test"], text="t", client_id=f"c-{tag}")).draft_id == again.draft_id
    edited = await client.inboxes.drafts.update(desk.inbox_id, draft.draft_id, text="The final offer")
    assert edited.text == "The final offer" and edited.subject == f"Offer {tag}"
    listed = await client.inboxes.drafts.list(desk.inbox_id)
    assert {d.draft_id for d in listed.drafts} == {draft.draft_id, again.draft_id}
    assert draft.draft_id in {d.draft_id for d in (await client.drafts.list()).drafts}

    before = len(relay.received)
    sent = [await client.inboxes.drafts.send(desk.inbox_id, draft.draft_id, idempotency_key=f"s-{tag}") for _ in range(2)]
    assert sent[0].message_id == sent[1].message_id
    [out] = (await relay.wait_for(before + 1))[before:]
    assert out.message["Subject"] == f"Offer {tag}" and out.message.get_content().strip() == "The final offer"
    with pytest.raises(NotFoundError):
        await client.inboxes.drafts.get(desk.inbox_id, draft.draft_id)  # sent: no longer a draft
    await client.inboxes.drafts.delete(desk.inbox_id, again.draft_id)
    assert [d.draft_id for d in (await client.inboxes.drafts.list(desk.inbox_id)).drafts] == []

    due = datetime.now(UTC) + timedelta(seconds=3)
    later = await client.inboxes.drafts.create(desk.inbox_id, to=[f"lou-{tag}@example.test"], subject=f"Later {tag}", text="t", send_at=due)
    assert later.send_status == "scheduled" and later.send_at
    with pytest.raises(ConflictError):
        await client.inboxes.drafts.update(desk.inbox_id, later.draft_id, text="too late", request_options={"max_retries": 0})
    [fired] = (await relay.wait_for(before + 2, timeout=15))[before + 1:]
    assert fired.message["Subject"] == f"Later {tag}" and time.time() >= due.timestamp()  # not before it was due
    with pytest.raises(NotFoundError):
        await client.inboxes.drafts.get(desk.inbox_id, later.draft_id)
    with pytest.raises(ValidationError):
        await client.inboxes.drafts.create(desk.inbox_id, to=["a@example.test"], text="t", send_at=datetime.now(UTC) - timedelta(minutes=1))


async def test_a_websocket_subscription_receives_message_received_for_mail_arriving_by_smtp(api: Api, inbound: int) -> None:
    client = sdk(api)
    inbox, other = await client.inboxes.create(), await client.inboxes.create()
    tag = uuid.uuid4().hex[:6]
    async with client.websockets.connect() as socket:
        await socket.send_subscribe(Subscribe(event_types=["message.received"], inbox_ids=[inbox.inbox_id]))
        subscribed = await asyncio.wait_for(socket.recv(), 10)
        assert isinstance(subscribed, Subscribed) and subscribed.inbox_ids == [inbox.inbox_id]
        for to in (other, inbox):  # `other`'s mail is not subscribed to: the first event is `inbox`'s
            letter = EmailMessage()
            letter["From"], letter["To"], letter["Subject"] = "rae@example.test", to.email, f"For {to.inbox_id} {tag}"
            letter.set_content("Live?")
            await deliver(inbound, letter, "rae@example.test", [to.email])
        event = await asyncio.wait_for(socket.recv(), 20)
        assert isinstance(event, MessageReceivedEvent) and event.event_type == "message.received"
        assert event.message.subject == f"For {inbox.inbox_id} {tag}" and event.message.from_ == "rae@example.test"
        assert event.thread.thread_id == event.message.thread_id and event.thread.message_count == 1

        await socket.send_subscribe(Subscribe(event_types=["message.teleported"]))
        refused = await asyncio.wait_for(socket.recv(), 10)
        assert isinstance(refused, Error) and "event_types" in refused.message


async def test_an_inbox_whose_sends_wait_for_a_person_holds_them_as_drafts_a_send_key_cannot_send(
    api: Api, default_relay: Relay
) -> None:
    client, relay = sdk(api), default_relay
    inbox = await client.inboxes.create()
    status, _, _ = await api.call("PATCH", f"/v1/identities/{inbox.inbox_id}", {"requireApproval": True})
    assert status == 200
    before = len(relay.received)
    held = await client.inboxes.messages.send(inbox.inbox_id, to="pat@example.test", subject="Held", text="t")
    [draft] = (await client.inboxes.drafts.list(inbox.inbox_id)).drafts
    assert draft.subject == "Held" and draft.send_status is None and held.message_id

    _, agent_key, _ = await api.call("POST", "/v1/api-keys", {"scopes": ["send", "read"]})
    agent = sdk(api.as_key(agent_key["apiKey"]))
    with pytest.raises(MessageRejectedError) as refused:
        await agent.inboxes.drafts.send(inbox.inbox_id, draft.draft_id)
    assert "approve" in refused.value.body.message
    await asyncio.sleep(0.5)
    assert len(relay.received) == before  # nothing went out

    sent = await client.inboxes.drafts.send(inbox.inbox_id, draft.draft_id)  # the admin key: a person
    assert sent.message_id == held.message_id
    [out] = (await relay.wait_for(before + 1))[before:]
    assert out.message["Subject"] == "Held"


async def test_lists_filter_by_labels_time_sender_and_subject_and_threads_page_and_delete_org_wide(api: Api) -> None:
    client = sdk(api)
    desk = await client.inboxes.create()
    tag = uuid.uuid4().hex[:6]
    first = await client.inboxes.messages.send(desk.inbox_id, to="ana@example.test", subject=f"alpha {tag}", text="1", labels=["lead"])
    middle = datetime.now(UTC)
    await asyncio.sleep(0.05)
    for n in (2, 3):  # the thread of `first` grows to three messages
        await client.inboxes.messages.reply(desk.inbox_id, first.message_id, text=f"{n}")
    other = await client.inboxes.messages.send(desk.inbox_id, to="bo@example.test", subject=f"beta {tag}", text="4")

    async def listed(**query) -> list[str]:
        return [m.message_id for m in (await client.inboxes.messages.list(desk.inbox_id, **query)).messages]

    every = await eventually(lambda: _at_least(listed(), 4))
    assert every[0] == other.message_id and every[-1] == first.message_id  # newest first
    assert await listed(ascending=True) == every[::-1]
    assert await listed(labels=["lead"]) == [first.message_id]
    assert await listed(labels=["sent", "lead"]) == [first.message_id] and await listed(labels=["received"]) == []
    assert await listed(to=["bo@"]) == [other.message_id]
    assert set(await listed(subject=[f"ALPHA {tag}"])) == set(every) - {other.message_id}  # and its replies' "Re: alpha"
    assert first.message_id not in await listed(after=middle) and await listed(before=middle) == [first.message_id]

    threads = (await client.threads.list(limit=100)).threads
    assert {first.thread_id, other.thread_id} <= {t.thread_id for t in threads}
    assert [t.thread_id for t in (await client.inboxes.threads.list(desk.inbox_id, recipients=["bo@"])).threads] == [other.thread_id]
    newest = await client.threads.get(first.thread_id, limit=2)
    assert newest.message_count == 3 and [m.text.strip() for m in newest.messages] == ["2", "3"] and newest.next_page_token
    oldest = await client.inboxes.threads.get(desk.inbox_id, first.thread_id, limit=2, page_token=newest.next_page_token)
    assert [m.message_id for m in oldest.messages] == [first.message_id] and oldest.next_page_token is None

    await client.threads.delete(first.thread_id)
    with pytest.raises(NotFoundError):
        await client.threads.get(first.thread_id)
    assert await listed() == [other.message_id]  # its messages are gone from the lists too
    with pytest.raises(ApiError) as bad:  # the SDK's list names no error type for a 400
        await client.inboxes.messages.list(desk.inbox_id, request_options={"additional_query_parameters": {"ascending": "maybe"}})
    assert bad.value.status_code == 400 and "ascending" in bad.value.body["message"]


async def _at_least(listing, n: int):
    found = await listing
    return found if len(found) >= n else None


async def test_files_sent_are_listed_downloaded_carried_by_a_forward_and_the_raw_message_is_downloadable(
    api: Api, default_relay: Relay
) -> None:
    client, relay = sdk(api), default_relay
    sender, desk = await client.inboxes.create(), await client.inboxes.create()
    pdf = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
    quote = SendAttachment(filename="quote.pdf", content_type="application/pdf", content=base64.b64encode(pdf).decode())
    await client.inboxes.messages.send(sender.inbox_id, to=desk.email, subject="Quote", text="Attached.", attachments=[quote])

    async def arrived():
        page = await client.inboxes.messages.list(desk.inbox_id)
        return page.messages[0] if page.count else None

    item = await eventually(arrived)
    [meta] = item.attachments
    assert (meta.filename, meta.size, meta.content_type) == ("quote.pdf", len(pdf), "application/pdf")
    link = await client.inboxes.messages.get_attachment(desk.inbox_id, item.message_id, meta.attachment_id)
    async with api.session.get(link.download_url) as r:
        assert r.status == 200 and await r.read() == pdf
    raw = await client.inboxes.messages.get_raw(desk.inbox_id, item.message_id)
    async with api.session.get(raw.download_url) as r:
        whole = message_from_bytes(await r.read(), policy=policy.default)
    assert whole["Subject"] == "Quote" and raw.size > len(pdf)
    assert [p.get_filename() for p in whole.iter_attachments()] == ["quote.pdf"]

    before = len(relay.received)
    await client.inboxes.messages.forward(desk.inbox_id, item.message_id, to="boss@example.test", text="FYI")
    [out] = (await relay.wait_for(before + 1))[before:]
    [carried] = list(out.message.iter_attachments())
    assert carried.get_filename() == "quote.pdf" and carried.get_content() == pdf
    with pytest.raises(NotFoundError):
        await client.inboxes.messages.get_attachment(desk.inbox_id, item.message_id, "att_nothing")
    with pytest.raises(ValidationError):
        await client.inboxes.messages.send(
            desk.inbox_id, to="a@example.test", text="t", attachments=[SendAttachment(filename="x.pdf", url="https://example.test/x.pdf")]
        )
