"""The AgentMail dialect through AgentMail's own Python SDK (`pip install agentmail svix`), unchanged.

    python examples/agentmail_sdk.py [base_url] [api_key] [inbound_smtp_port]

Defaults: `make run`'s stack (http://127.0.0.1:8080, sk_live_localdev, inbound SMTP on 2525). Everything
an agent written for AgentMail does, pointed at sendstream by one URL: inboxes (one per `client_id`), a
send between two of them under an idempotency key, the message and its thread read back, reply,
reply-all, forward, labels, drafts (edited and sent; one with `send_at`, sent when due), a webhook whose
deliveries verify with Svix's library, a WebSocket subscription hearing mail arrive by SMTP, a block
list refusing a sender, 120 messages paged, and the SDK's own errors. Exits 0 when every step did.
"""

from __future__ import annotations

import json
import smtplib
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import svix.webhooks
from agentmail import AgentMail, AgentMailEnvironment, MessageReceivedEvent, Subscribe, Subscribed
from agentmail.errors import ConflictError, NotFoundError, ValidationError
from agentmail.inboxes import CreateInboxRequest


def wait_for(probe, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while not (found := probe()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
    return found


class Hooks(BaseHTTPRequestHandler):
    """A webhook endpoint of the agent's: keeps each delivery's headers and body."""

    got: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:  # http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hooks.got.append((dict(self.headers), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


def letter(sender: str, to: str, subject: str, text: str) -> EmailMessage:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = sender, to, subject
    m.set_content(text)
    return m


def main(base_url: str = "http://127.0.0.1:8080", api_key: str = "sk_live_localdev", smtp_port: int = 2525) -> None:
    ws_url = base_url.replace("http", "ws", 1)
    client = AgentMail(api_key=api_key, environment=AgentMailEnvironment(http=base_url, websockets=ws_url))
    tag = uuid.uuid4().hex[:6]

    # Inboxes: the same client_id twice makes one.
    sender = client.inboxes.create(request=CreateInboxRequest(username=f"agent-{tag}", client_id=f"agent-{tag}"))
    assert client.inboxes.create(request=CreateInboxRequest(username=f"agent-{tag}", client_id=f"agent-{tag}")).inbox_id == sender.inbox_id
    desk = client.inboxes.create(request=CreateInboxRequest(username=f"desk-{tag}", display_name="Desk"))

    # A webhook of the desk's, verified with Svix's library.
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = client.webhooks.create(
        url=f"http://127.0.0.1:{server.server_port}/hooks", event_types=["message.received"], inbox_ids=[desk.inbox_id]
    )

    with client.websockets.connect() as socket:
        socket.send_subscribe(Subscribe(event_types=["message.received"], inbox_ids=[desk.inbox_id]))
        assert isinstance(socket.recv(), Subscribed)

        # A send between the two inboxes, twice under one key: one message.
        sent = [
            client.inboxes.messages.send(sender.inbox_id, to=desk.email, subject=f"Hello {tag}", text="Are you there?", idempotency_key=f"hello-{tag}")
            for _ in range(2)
        ]
        assert sent[0].message_id == sent[1].message_id
        page = wait_for(lambda: client.inboxes.messages.list(desk.inbox_id).messages)
        [item] = page
        assert item.subject == f"Hello {tag}" and item.from_ == sender.email
        assert client.inboxes.messages.get(desk.inbox_id, item.message_id).text.strip() == "Are you there?"
        thread = client.inboxes.threads.get(desk.inbox_id, item.thread_id)
        assert [m.message_id for m in thread.messages] == [item.message_id]

        event = socket.recv()  # the WebSocket heard it arrive
        assert isinstance(event, MessageReceivedEvent) and event.message.message_id == item.message_id

        # Mail from outside, by SMTP to the inbound server: heard on the socket as well.
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
            smtp.send_message(letter("lee@example.test", desk.email, f"Quote {tag}", "How much?"))
        event = socket.recv()
        assert isinstance(event, MessageReceivedEvent) and event.message.subject == f"Quote {tag}"

    headers, body = wait_for(lambda: len(Hooks.got) >= 2 and Hooks.got)[0]
    svix.webhooks.Webhook(hook.secret).verify(body, headers)  # raises unless it verifies
    assert json.loads(body)["event_type"] == "message.received"
    client.webhooks.delete(hook.webhook_id)
    server.shutdown()

    # Reply, reply-all and forward; labels.
    reply = client.inboxes.messages.reply(desk.inbox_id, item.message_id, text="Yes, here.")
    assert reply.thread_id == item.thread_id
    assert client.inboxes.messages.reply_all(desk.inbox_id, item.message_id, text="All of you.").thread_id == item.thread_id
    forwarded = client.inboxes.messages.forward(desk.inbox_id, item.message_id, to="boss@example.test", text="FYI")
    assert forwarded.thread_id != item.thread_id
    labelled = client.inboxes.messages.update(desk.inbox_id, item.message_id, add_labels=["lead"], remove_labels=["unread"])
    assert labelled.labels == ["received", "lead"]

    # Drafts: edited, then sent once; one with send_at goes out by itself when due.
    draft = client.inboxes.drafts.create(desk.inbox_id, to=["kim@example.test"], subject=f"Offer {tag}", text="draft")
    assert client.inboxes.drafts.update(desk.inbox_id, draft.draft_id, text="The offer").text == "The offer"
    out = [client.inboxes.drafts.send(desk.inbox_id, draft.draft_id, idempotency_key=f"offer-{tag}") for _ in range(2)]
    assert out[0].message_id == out[1].message_id
    later = client.inboxes.drafts.create(
        desk.inbox_id, to=["kim@example.test"], subject=f"Later {tag}", text="t", send_at=datetime.now(UTC) + timedelta(seconds=2)
    )
    assert later.send_status == "scheduled"
    wait_for(lambda: any(m.subject == f"Later {tag}" for m in client.inboxes.messages.list(desk.inbox_id).messages))

    # A blocked sender is refused at the inbound server.
    client.lists.create("receive", "block", entry=f"spam-{tag}@example.test")
    try:
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
            smtp.send_message(letter(f"spam-{tag}@example.test", desk.email, "Buy", "now"))
        raise AssertionError("a blocked sender's mail was taken")
    except smtplib.SMTPRecipientsRefused as refused:
        assert refused.recipients[desk.email][0] == 550

    # 120 messages, paged without repeats.
    bulk = client.inboxes.create()
    ids = {client.inboxes.messages.send(bulk.inbox_id, to=f"p{i}@example.test", subject=f"#{i}", text="t").message_id for i in range(120)}

    def all_pages() -> list[str] | None:
        seen, token = [], None
        while True:
            page = client.inboxes.messages.list(bulk.inbox_id, limit=50, page_token=token)
            seen += [m.message_id for m in page.messages]
            if not (token := page.next_page_token):
                return seen if set(seen) == ids else None

    seen = wait_for(all_pages)
    assert len(seen) == len(set(seen)) == 120

    # The SDK's own errors.
    for call, error in (
        (lambda: client.inboxes.get(f"nobody-{tag}@example.test"), NotFoundError),
        (lambda: client.inboxes.messages.send(bulk.inbox_id, to="not an address", text="t"), ValidationError),
        (lambda: client.inboxes.messages.send(bulk.inbox_id, to="a@example.test", text="other", idempotency_key=f"hello-{tag}",
                                              request_options={"max_retries": 0}), ConflictError),
    ):  # fmt: skip
        try:
            call()
            raise AssertionError(f"expected {error.__name__}")
        except error:
            pass
    print("AgentMail SDK: inboxes, send, reply, forward, labels, drafts, webhooks, websocket, lists, pages and errors all work")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(*args[:2], *(int(p) for p in args[2:3]))
