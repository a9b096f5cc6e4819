"""The AgentMail dialect (issue 27): AgentMail's `/v0` routes over the core, as its official SDK calls them.
An inbox's id is its address; sends go through the core's send command (once per Idempotency-Key);
messages and threads are read from the message views every dialect reads."""

from __future__ import annotations

import secrets
from datetime import datetime
from uuid import UUID

import asyncpg
from aiohttp import web

from mail import forward
from schemas import ids
from schemas.api import agentmail
from schemas.api.agentmail import (
    SYSTEM_LABELS,
    AddListEntry,
    CreateInbox,
    ForwardMessage,
    Inbox,
    InboxList,
    ListEntries,
    ListEntry,
    Message,
    MessageList,
    ReplyAll,
    ReplyMessage,
    SendMessage,
    SendMessageResponse,
    Thread,
    ThreadList,
    UpdateInbox,
    UpdateMessage,
    UpdateMessageResponse,
    entry_out,
    inbox_out,
    labels_of,
    message_item,
    message_out,
    thread_item,
    thread_out,
)
from schemas.commands import Command, NewSend, Reply
from schemas.events import Content, Forwarded
from schemas.limits import DEFAULT_DAILY_CAP
from services.common.domain import views
from services.ingress import cursors
from services.ingress.context import ctx
from services.ingress.core import directory, flags
from services.ingress.core.errors import Conflict
from services.ingress.core.outcome import Outcome
from services.ingress.http import ApiError, Call, json_model, query_limit, route
from services.ingress.sending import send_one

NAME = agentmail.DIALECT.name
NOUNS = {"identity": "Inbox", "message": "Message", "conversation": "Thread"}
DIALECT = {"tag": NAME, "nouns": NOUNS, "error_body": agentmail.DIALECT.error_body}


async def find_inbox(call: Call) -> asyncpg.Record:
    return await directory.find_identity(ctx(call), call.principal.org_id, call.param("inbox_id"))


def page_token(call: Call) -> tuple[datetime, UUID] | None:
    token = call.request.query.get("page_token")
    return cursors.decode(token, datetime, UUID, name="page_token") if token else None


# --- inboxes -----------------------------------------------------------------------------------------


async def by_client_id(call: Call, client_id: str) -> asyncpg.Record | None:
    return await ctx(call).pool.fetchrow(
        "SELECT * FROM identities WHERE org_id = $1 AND client_id = $2 AND deleted_at IS NULL",
        call.principal.org_id, client_id,
    )  # fmt: skip


@route(
    "POST", "/v0/inboxes", scope="admin", body=CreateInbox, body_optional=True, response=Inbox, errors=(400, 409),
    summary="Create an inbox (`username`, `domain`, `display_name`, `client_id`: all optional; the same "
    "`client_id` again answers the inbox it made)", **DIALECT,
)  # fmt: skip
async def create_inbox(call: Call) -> web.Response:
    b: CreateInbox = call.body
    c = ctx(call)
    if b.client_id and (made := await by_client_id(call, b.client_id)):
        return json_model(inbox_out(made))
    domain = b.domain or c.settings.inbox_default_domain
    if domain is None:
        raise ApiError(400, "invalid_request", "domain: is required (this server has no default inbox domain)")
    if c.settings.inbox_default_relay is None:
        raise ApiError(400, "invalid_request", "this server has no default relay for new inboxes")
    email = f"{b.username or 'inbox-' + secrets.token_hex(4)}@{domain}"
    account = directory.NewAccount.through(email, c.settings.inbox_default_relay)
    try:
        identity, _ = await directory.create_identity(
            c, call.principal.org_id, email, daily_cap=DEFAULT_DAILY_CAP, timezone="UTC", name=b.display_name,
            accounts=[account], correlation_id=call.request_id, dialect=NAME, client_id=b.client_id,
        )  # fmt: skip
    except Conflict:
        if b.client_id and (made := await by_client_id(call, b.client_id)):  # made at the same moment
            return json_model(inbox_out(made))
        raise
    return json_model(inbox_out(identity))


@route(
    "GET", "/v0/inboxes", scope="read", response=InboxList, errors=(400,),
    summary="The organization's inboxes, newest first (`limit` 1-100, `page_token`)", **DIALECT,
)  # fmt: skip
async def list_inboxes(call: Call) -> web.Response:
    limit, after = query_limit(call, 50), page_token(call)
    rows = await ctx(call).pool.fetch(
        """SELECT * FROM identities WHERE org_id = $1 AND deleted_at IS NULL
              AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
            ORDER BY created_at DESC, id DESC LIMIT $4""",
        call.principal.org_id, after and after[0], after and after[1], limit + 1,
    )  # fmt: skip
    more, rows = len(rows) > limit, rows[:limit]
    token = cursors.encode(rows[-1]["created_at"], rows[-1]["id"]) if more else None
    return json_model(InboxList(count=len(rows), limit=limit, next_page_token=token, inboxes=[inbox_out(r) for r in rows]))


@route("GET", "/v0/inboxes/{inbox_id}", scope="read", response=Inbox, errors=(404,), summary="An inbox", **DIALECT)
async def get_inbox(call: Call) -> web.Response:
    return json_model(inbox_out(await find_inbox(call)))


@route(
    "PATCH", "/v0/inboxes/{inbox_id}", scope="admin", body=UpdateInbox, response=Inbox, errors=(400, 404),
    summary="Change an inbox's display name", **DIALECT,
)  # fmt: skip
async def update_inbox(call: Call) -> web.Response:
    inbox = await find_inbox(call)
    b: UpdateInbox = call.body
    row = await directory.update_identity(
        ctx(call), inbox, call.request_id, daily_cap=None, timezone=None, name=b.display_name
    )
    return json_model(inbox_out(row))


@route(
    "DELETE", "/v0/inboxes/{inbox_id}", scope="admin", status=204, errors=(404,), summary="Delete an inbox",
    **DIALECT,
)  # fmt: skip
async def delete_inbox(call: Call) -> web.Response:
    await directory.delete_identity(ctx(call), await find_inbox(call), call.request_id)
    return web.Response(status=204)


# --- messages ----------------------------------------------------------------------------------------


@route(
    "POST", "/v0/inboxes/{inbox_id}/messages/send", scope="send", body=SendMessage, response=SendMessageResponse,
    errors=(400, 403, 404, 409, 413, 429, 503), idempotent=True,
    summary="Send one message to every address of to, cc and bcc (a new thread)", **DIALECT,
)  # fmt: skip
async def send_message(call: Call) -> web.Response:
    inbox = await find_inbox(call)
    b: SendMessage = call.body
    if b.text is None and b.html is None:
        raise ApiError(400, "invalid_request", "text: text or html is required")
    content = Content(
        subject=b.subject, text=b.text, html=b.html, cc=b.cc, bcc=b.bcc, labels=b.labels, dialect=NAME,
        unsubscribe=await directory.wants_unsubscribe(ctx(call), inbox["org_id"], None),
    )  # fmt: skip
    return await send(call, inbox, NewSend(identity_id=inbox["id"], messages=[b.to], content=content))


@route(
    "GET", "/v0/inboxes/{inbox_id}/messages", scope="read", response=MessageList, errors=(400, 404),
    summary="The inbox's messages, newest first (`limit` 1-100, `page_token`)", **DIALECT,
)  # fmt: skip
async def list_messages(call: Call) -> web.Response:
    inbox = await find_inbox(call)
    limit = query_limit(call, 50)
    rows, more = await views.mailbox_page(ctx(call).pool, inbox["org_id"], inbox["id"], after=page_token(call), limit=limit)
    token = cursors.encode(rows[-1]["created_at"], rows[-1]["id"]) if more else None
    return json_model(MessageList(count=len(rows), limit=limit, next_page_token=token, messages=[message_item(r) for r in rows]))


@route(
    "GET", "/v0/inboxes/{inbox_id}/messages/{message_id}", scope="read", response=Message, errors=(404,),
    summary="A message, whole", **DIALECT,
)  # fmt: skip
async def get_message(call: Call) -> web.Response:
    return json_model(message_out(await find_message(call, await find_inbox(call))))


async def find_message(call: Call, inbox: asyncpg.Record) -> asyncpg.Record:
    message_id = ids.parse("message", call.param("message_id"))
    row = await views.inbox_message(ctx(call).pool, inbox["org_id"], inbox["id"], message_id)
    if row is None:
        raise ApiError(404, "not_found", "Message not found")
    return row


@route(
    "PATCH", "/v0/inboxes/{inbox_id}/messages/{message_id}", scope="send", body=UpdateMessage,
    response=UpdateMessageResponse, errors=(400, 404),
    summary="Add and remove a message's labels (removing `unread` marks it read; adding it, unread)", **DIALECT,
)  # fmt: skip
async def update_message(call: Call) -> web.Response:
    inbox = await find_inbox(call)
    row = await find_message(call, inbox)
    b: UpdateMessage = call.body
    if clash := set(b.add_labels) & set(b.remove_labels):
        raise ApiError(400, "invalid_request", f"add_labels: {sorted(clash)[0]} is also in remove_labels")
    own = [label for label in row["labels"] or [] if label not in b.remove_labels]
    own += [label for label in b.add_labels if label not in own and label not in SYSTEM_LABELS]
    own = [label for label in own if label not in SYSTEM_LABELS]
    is_read = False if "unread" in b.add_labels else True if "unread" in b.remove_labels else None
    changed = own != list(row["labels"] or [])
    if changed or is_read is not None:
        await flags.change(
            ctx(call), inbox, row["id"], call.request_id, is_read=is_read, labels=own if changed else None
        )
    shown = {**dict(row), "labels": own, **({"is_read": is_read} if is_read is not None else {})}
    return json_model(UpdateMessageResponse(message_id=ids.render("message", row["id"]), labels=labels_of(shown)))


async def send(call: Call, inbox: asyncpg.Record, cmd: Command) -> web.Response:
    """A send, reply or forward, once per Idempotency-Key, answered with its message's and thread's ids
    (403 when it was refused: a suppressed recipient, the daily cap)."""

    async def answer(_: Command, outcome: Outcome, __: list) -> web.Response:
        [m] = outcome.messages
        if m.state == "rejected":
            raise ApiError(403, "forbidden", f"the message was rejected: {m.reason}")
        return json_model(
            SendMessageResponse(message_id=ids.render("message", m.message_id), thread_id=ids.render("thread", m.conv_id))
        )

    return await send_one(call, inbox, NAME, lambda: cmd, answer)


@route(
    "POST", "/v0/inboxes/{inbox_id}/messages/{message_id}/reply", scope="send", body=ReplyMessage,
    response=SendMessageResponse, errors=(400, 403, 404, 409, 413, 429, 503), idempotent=True,
    summary="Reply in the message's thread: to its sender, everyone on it (`reply_all`), or `to`", **DIALECT,
)  # fmt: skip
async def reply(call: Call) -> web.Response:
    b: ReplyMessage = call.body
    return await replying(call, b.to, b.reply_all, Content(text=b.text, html=b.html, cc=b.cc, bcc=b.bcc, labels=b.labels))


@route(
    "POST", "/v0/inboxes/{inbox_id}/messages/{message_id}/reply-all", scope="send", body=ReplyAll,
    response=SendMessageResponse, errors=(400, 403, 404, 409, 413, 429, 503), idempotent=True,
    summary="Reply to everyone on the message but this inbox, in its thread", **DIALECT,
)  # fmt: skip
async def reply_all(call: Call) -> web.Response:
    b: ReplyAll = call.body
    return await replying(call, None, True, Content(text=b.text, html=b.html, labels=b.labels))


async def replying(call: Call, to: list[str] | None, everyone: bool, content: Content) -> web.Response:
    c = ctx(call)
    inbox = await find_inbox(call)
    original = await find_message(call, inbox)
    if content.text is None and content.html is None:
        raise ApiError(400, "invalid_request", "text: text or html is required")
    thread = await directory.find_thread(c, inbox, original["conv_id"])
    if everyone and to is None:
        ours = inbox["handle"].lower()
        on_it = [original["from_addr"], *(original["to_addrs"] or []), *(original["cc_addrs"] or [])]
        to = list(dict.fromkeys(a for a in on_it if a and a.lower() != ours)) or None
    cmd = Reply(
        identity_id=inbox["id"], conv_id=thread["conv_id"], to=thread["counterpart"], recipients=to,
        content=content.model_copy(update={"dialect": NAME}), answering=original["rfc_message_id"],
    )  # fmt: skip
    return await send(call, inbox, cmd)


@route(
    "POST", "/v0/inboxes/{inbox_id}/messages/{message_id}/forward", scope="send", body=ForwardMessage,
    response=SendMessageResponse, errors=(400, 403, 404, 409, 413, 429, 503), idempotent=True,
    summary="Forward the message inline below a note (a new thread)", **DIALECT,
)  # fmt: skip
async def forward_message(call: Call) -> web.Response:
    inbox = await find_inbox(call)
    original = await find_message(call, inbox)
    b: ForwardMessage = call.body
    text, html = forward.inline_bodies(original, b.text, b.html)
    content = Content(
        subject=forward.subject(original["subject"], b.subject), text=text, html=html, cc=b.cc, bcc=b.bcc,
        labels=b.labels, dialect=NAME,
        forwarded=Forwarded(message_id=original["id"], rfc_message_id=original["rfc_message_id"]),
    )  # fmt: skip
    return await send(call, inbox, NewSend(identity_id=inbox["id"], messages=[b.to], content=content))


# --- threads -----------------------------------------------------------------------------------------


@route(
    "GET", "/v0/inboxes/{inbox_id}/threads", scope="read", response=ThreadList, errors=(400, 404),
    summary="The inbox's threads, most recently active first (`limit` 1-100)", **DIALECT,
)  # fmt: skip
async def list_threads(call: Call) -> web.Response:
    inbox = await find_inbox(call)
    limit = query_limit(call, 50)
    found = await views.inbox_threads(ctx(call).pool, inbox["org_id"], inbox["id"], limit=limit)
    threads = [thread_item({**conv, "handle": inbox["handle"]}, rows) for conv, rows in found]
    return json_model(ThreadList(count=len(threads), limit=limit, threads=threads))


@route(
    "GET", "/v0/inboxes/{inbox_id}/threads/{thread_id}", scope="read", response=Thread, errors=(404,),
    summary="A thread with its messages in order", **DIALECT,
)  # fmt: skip
async def get_thread(call: Call) -> web.Response:
    inbox = await find_inbox(call)
    conv_id = ids.parse("thread", call.param("thread_id"))
    found = conv_id and await views.inbox_threads(ctx(call).pool, inbox["org_id"], inbox["id"], conv_id)
    if not found:
        raise ApiError(404, "not_found", "Thread not found")
    [(conv, rows)] = found
    return json_model(thread_out({**conv, "handle": inbox["handle"]}, rows))


# --- lists: who may mail the organization's inboxes (its sender rules) ------------------------------

LISTS = "receive"  # the direction kept: the sender rules of inbound mail (SPEC 2)


def list_of(call: Call) -> str:
    """The list's type (`allow` or `block`) of the path; 400 naming the part this server keeps none of."""
    direction, kind = call.param("direction"), call.param("type")
    if direction != LISTS:
        raise ApiError(400, "invalid_request", f"direction: only the {LISTS} lists are kept here, not {direction}")
    if kind not in ("allow", "block"):
        raise ApiError(400, "invalid_request", "type: must be allow or block")
    return kind


@route(
    "GET", "/v0/lists/{direction}/{type}", scope="read", response=ListEntries, errors=(400,),
    summary="A list's entries (`receive`: the organization's sender rules), by entry", **DIALECT,
)  # fmt: skip
async def list_entries(call: Call) -> web.Response:
    kind = list_of(call)
    rows = await ctx(call).pool.fetch(
        "SELECT * FROM sender_rules WHERE org_id = $1 AND action = $2 ORDER BY pattern", call.principal.org_id, kind
    )
    return json_model(ListEntries(count=len(rows), entries=[entry_out(r, LISTS) for r in rows]))


@route(
    "POST", "/v0/lists/{direction}/{type}", scope="admin", body=AddListEntry, response=ListEntry, errors=(400,),
    summary="Allow or block a sender (an address, or a domain with its subdomains); an entry moves from one "
    "list to the other", **DIALECT,
)  # fmt: skip
async def add_entry(call: Call) -> web.Response:
    kind = list_of(call)
    b: AddListEntry = call.body
    row = await ctx(call).pool.fetchrow(
        """INSERT INTO sender_rules (org_id, pattern, action) VALUES ($1, $2, $3)
           ON CONFLICT (org_id, pattern) DO UPDATE SET action = EXCLUDED.action RETURNING *""",
        call.principal.org_id, b.entry, kind,
    )  # fmt: skip
    return json_model(entry_out(row, LISTS).model_copy(update={"reason": b.reason}))


async def find_entry(call: Call) -> asyncpg.Record:
    kind = list_of(call)
    row = await ctx(call).pool.fetchrow(
        "SELECT * FROM sender_rules WHERE org_id = $1 AND pattern = lower($2) AND action = $3",
        call.principal.org_id, call.param("entry"), kind,
    )  # fmt: skip
    if row is None:
        raise ApiError(404, "not_found", "Entry not found")
    return row


@route(
    "GET", "/v0/lists/{direction}/{type}/{entry}", scope="read", response=ListEntry, errors=(400, 404),
    summary="A list's entry", **DIALECT,
)  # fmt: skip
async def get_entry(call: Call) -> web.Response:
    return json_model(entry_out(await find_entry(call), LISTS))


@route(
    "DELETE", "/v0/lists/{direction}/{type}/{entry}", scope="admin", status=204, errors=(400, 404),
    summary="Remove a list's entry", **DIALECT,
)  # fmt: skip
async def remove_entry(call: Call) -> web.Response:
    row = await find_entry(call)
    await ctx(call).pool.execute("DELETE FROM sender_rules WHERE org_id = $1 AND pattern = $2", row["org_id"], row["pattern"])
    return web.Response(status=204)
