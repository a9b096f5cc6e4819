"""The inboxes dialect (SPEC 3.2): inboxes over the core's identities; send and reply through the core's
send command; messages, search and threads read from the message views (services/common/domain/views.py)."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from aiohttp import web

from schemas import ids
from schemas.api import inboxes
from schemas.api.inboxes import (
    NOUNS,
    CreateInbox,
    Inbox,
    InboxList,
    Message,
    MessageList,
    ReplyMessage,
    SendMessage,
    Thread,
    ThreadList,
    inbox_out,
    message_out,
    sent_message,
    thread_out,
)
from schemas.commands import Command, NewSend, Reply
from schemas.events import Content
from schemas.limits import ATTACHMENTS_BODY, DEFAULT_DAILY_CAP
from schemas.replies import reply_subject
from services.common.domain import views
from services.ingress.context import ctx
from services.ingress.core import attachments, directory, egress, scheduling
from services.ingress.core.errors import NotFound
from services.ingress.core.outcome import Outcome
from services.ingress.http import ApiError, Call, json_model, query_limit, route
from services.ingress.sending import send_one

DIALECT_NAME = inboxes.DIALECT.name
DIALECT = {"tag": DIALECT_NAME, "nouns": NOUNS, "error_body": inboxes.DIALECT.error_body}


def generated_address(name: str | None, domain: str) -> str:
    """`support-bot-3f9a1c@domain`: the name made into a local part, and a random tail so two inboxes of
    one name never collide."""
    slug = re.sub(r"[^a-z0-9]+", "-", (name or "inbox").lower()).strip("-")[:40] or "inbox"
    return f"{slug}-{secrets.token_hex(3)}@{domain}"


async def find_inbox(call: Call):
    return await directory.find_identity_by_id(
        ctx(call), call.principal.org_id, ids.parse("inbox", call.param("inboxId"))
    )


@route(
    "POST", "/v1/inboxes", scope="admin", summary="Create an inbox", body=CreateInbox, response=Inbox,
    status=201, errors=(400, 409), **DIALECT,
)  # fmt: skip
async def create_inbox(call: Call) -> web.Response:
    b: CreateInbox = call.body
    settings = ctx(call).settings
    if b.email is None and settings.inbox_default_domain is None:
        raise ApiError(400, "invalid_request", "email: is required (this server has no default inbox domain)")
    if b.smtp is None and settings.inbox_default_relay is None:
        raise ApiError(400, "invalid_request", "smtp: is required (this server has no default relay)")
    await egress.check_account(ctx(call), b.smtp)
    email = b.email or generated_address(b.name, settings.inbox_default_domain)
    account = directory.NewAccount.through(email, b.smtp or settings.inbox_default_relay)
    identity, _ = await directory.create_identity(
        ctx(call), call.principal.org_id, email, daily_cap=DEFAULT_DAILY_CAP, timezone="UTC", name=b.name,
        accounts=[account], correlation_id=call.request_id, dialect=DIALECT_NAME,
    )  # fmt: skip
    return json_model(inbox_out(identity), 201)


@route("GET", "/v1/inboxes", scope="read", summary="List inboxes", response=InboxList, **DIALECT)
async def list_inboxes(call: Call) -> web.Response:
    rows = await directory.list_identities(ctx(call), call.principal.org_id)
    return json_model(InboxList([inbox_out(r) for r in rows]))


@route(
    "GET", "/v1/inboxes/{inboxId}", scope="read", summary="Get an inbox", response=Inbox, errors=(404,),
    **DIALECT,
)  # fmt: skip
async def get_inbox(call: Call) -> web.Response:
    return json_model(inbox_out(await find_inbox(call)))


@route(
    "DELETE", "/v1/inboxes/{inboxId}", scope="admin", summary="Delete an inbox (answers it as it was)",
    response=Inbox, errors=(404,), **DIALECT,
)  # fmt: skip
async def delete_inbox(call: Call) -> web.Response:
    inbox = await find_inbox(call)
    await directory.delete_identity(ctx(call), inbox, call.request_id)
    return json_model(inbox_out(inbox))


async def send(
    call: Call, inbox, cmd: NewSend | Reply, shown: Content, files: dict[str, bytes] | None = None
) -> web.Response:
    """A one-message send or reply, answered as the message sent (`shown`: its content as the
    recipient gets it)."""

    async def answer(_: Command, outcome: Outcome, __: list) -> web.Response:
        [m] = outcome.messages
        return json_model(sent_message(m, inbox, shown, datetime.now(UTC)))

    return await send_one(call, inbox, DIALECT_NAME, lambda: cmd, answer, files)


@route(
    "POST", "/v1/inboxes/{inboxId}/messages/send", scope="send",
    summary="Send one message to every address of to, cc and bcc (a new thread)", body=SendMessage,
    response=Message, errors=(400, 404, 409, 413, 429, 503), idempotent=True,
    extra_body=ATTACHMENTS_BODY, **DIALECT,
)  # fmt: skip
async def send_message(call: Call) -> web.Response:
    inbox = await find_inbox(call)
    b: SendMessage = call.body
    content = Content(
        subject=b.subject, text=b.text, html=b.html, cc=b.cc, bcc=b.bcc, labels=b.labels, dialect=DIALECT_NAME,
        unsubscribe=await directory.wants_unsubscribe(ctx(call), inbox["org_id"], b.unsubscribe),
    )  # fmt: skip
    uploads = [
        attachments.Upload(f"attachments[{i}]", a.name, a.contentType, a.content)
        for i, a in enumerate(b.attachments)
    ]
    content, files = attachments.attach(content, uploads, inbox["handle"], b.to)
    when = scheduling.when(b, reply=False)
    cmd = NewSend(identity_id=inbox["id"], messages=[b.to], content=content, **when.fields())
    return await send(call, inbox, cmd, content, files)


@route(
    "GET", "/v1/inboxes/{inboxId}/messages", scope="read", response=MessageList, errors=(400, 404),
    summary="The inbox's messages, newest first; `query` searches subject, text and sender (best first; "
    "the last word matches as a prefix); `limit` 1-100, default 100", **DIALECT,
)  # fmt: skip
async def list_messages(call: Call) -> web.Response:
    inbox = await find_inbox(call)
    rows = await views.inbox_messages(
        ctx(call).pool, inbox["org_id"], inbox["id"], call.request.query.get("query"), query_limit(call, 100)
    )
    return json_model(MessageList([message_out(r) for r in rows]))


async def find_message(call: Call, inbox) -> object:
    return await directory.find_message(ctx(call), inbox, ids.parse("message", call.param("messageId")))


@route(
    "GET", "/v1/inboxes/{inboxId}/messages/{messageId}", scope="read", summary="A message, whole",
    response=Message, errors=(404,), **DIALECT,
)  # fmt: skip
async def get_message(call: Call) -> web.Response:
    row = await find_message(call, await find_inbox(call))
    return json_model(message_out(row, await views.files_of(ctx(call).blobs, row)))


@route(
    "POST", "/v1/inboxes/{inboxId}/messages/{messageId}/reply", scope="send",
    summary="Reply to a message: to its conversation's counterpart, `Re:` once, in its thread, from this inbox",
    body=ReplyMessage, response=Message, errors=(400, 404, 409, 413, 429, 503), idempotent=True, **DIALECT,
)  # fmt: skip
async def reply_to_message(call: Call) -> web.Response:
    c = ctx(call)
    inbox = await find_inbox(call)
    original = await find_message(call, inbox)
    thread = await directory.find_thread(c, inbox, original["conv_id"])
    b: ReplyMessage = call.body
    content = Content(text=b.text, html=b.html, dialect=DIALECT_NAME)
    when = scheduling.when(b, reply=True)
    cmd = Reply(
        identity_id=inbox["id"], conv_id=thread["conv_id"], to=thread["counterpart"], content=content,
        **when.fields(),
    )  # fmt: skip
    return await send(call, inbox, cmd, content.model_copy(update={"subject": reply_subject(thread["subject"])}))


@route(
    "GET", "/v1/inboxes/{inboxId}/threads", scope="read", response=ThreadList, errors=(400, 404),
    summary="The inbox's threads with their messages, most recently active first (`limit` 1-100, default 50)",
    **DIALECT,
)  # fmt: skip
async def list_threads(call: Call) -> web.Response:
    inbox = await find_inbox(call)
    found = await views.inbox_threads(
        ctx(call).pool, inbox["org_id"], inbox["id"], limit=query_limit(call, 50)
    )
    return json_model(ThreadList([thread_out(conv, rows) for conv, rows in found]))


@route(
    "GET", "/v1/inboxes/{inboxId}/threads/{threadId}", scope="read", summary="A thread with its messages in order",
    response=Thread, errors=(404,), **DIALECT,
)  # fmt: skip
async def get_thread(call: Call) -> web.Response:
    inbox = await find_inbox(call)
    conv_id = ids.parse("thread", call.param("threadId"))
    found = conv_id and await views.inbox_threads(ctx(call).pool, inbox["org_id"], inbox["id"], conv_id)
    if not found:
        raise NotFound("conversation")
    return json_model(thread_out(*found[0]))
