"""The AgentMail dialect (issue 27): AgentMail's `/v0` routes over the core, as its official SDK calls them.
An inbox's id is its address; sends go through the core's send command (once per Idempotency-Key);
messages and threads are read from the message views every dialect reads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import asyncpg
import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from mail import forward
from schemas import ids
from schemas.api import agentmail
from schemas.api.agentmail import (
    SYSTEM_LABELS,
    AddListEntry,
    AttachmentLink,
    CreateDraft,
    CreateInbox,
    CreateWebhook,
    Draft,
    DraftList,
    ForwardMessage,
    Inbox,
    InboxList,
    ListEntries,
    ListEntry,
    Message,
    MessageList,
    RawMessage,
    ReplyAll,
    ReplyMessage,
    SendAttachment,
    SendDraft,
    SendMessage,
    SendMessageResponse,
    Thread,
    ThreadList,
    UpdateDraft,
    UpdateInbox,
    UpdateMessage,
    UpdateMessageResponse,
    UpdateWebhook,
    Webhook,
    WebhookList,
    attachment_id,
    attachments_out,
    entry_out,
    inbox_out,
    labels_of,
    message_item,
    message_out,
    thread_item,
    thread_out,
    webhook_out,
)
from schemas.api.common import iso
from schemas.commands import Command, NewSend, Reply
from schemas.events import Attachment as EventAttachment
from schemas.events import Content, Forwarded, event_from
from schemas.limits import DEFAULT_DAILY_CAP
from schemas.schedule import ScheduleError, fire_at
from schemas.webhooks import webhook_type
from services.common.domain import bodies, views
from services.common.domain.blobs import BlobMissing
from services.common.domain.webhooks import signing
from services.common.domain.webhooks.shown import shown_alone
from services.ingress import cursors
from services.ingress.context import ctx
from services.ingress.core import attachments, directory, drafts, flags, scheduling
from services.ingress.core import suppressions as suppressing
from services.ingress.core.errors import Conflict, NotFound
from services.ingress.core.outcome import Outcome
from services.ingress.core.send import submit
from services.ingress.feed import head, page
from services.ingress.http import ApiError, Call, json_model, query_limit, route
from services.ingress.idempotency import IdSource, idempotent
from services.ingress.routes import downloads
from services.ingress.routes.webhooks import check_destination
from services.ingress.sending import origin_of, send_one

NAME = agentmail.DIALECT.name
OWN = agentmail.DIALECT.webhook_format  # its webhooks' and WebSocket's events
assert OWN is not None
log = structlog.get_logger("sendstream.ingress.agentmail")
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
    attached, files = incoming(b.attachments)
    content = Content(
        subject=b.subject, text=b.text, html=b.html, cc=b.cc, bcc=b.bcc, labels=b.labels, dialect=NAME, attachments=attached,
        unsubscribe=await directory.wants_unsubscribe(ctx(call), inbox["org_id"], None),
    )  # fmt: skip
    return await send(call, inbox, NewSend(identity_id=inbox["id"], messages=[b.to], content=content), files)


MESSAGE_FILTERS = ("from", "to", "subject")
THREAD_FILTERS = ("senders", "recipients", "subject")
IGNORED = ("include_spam", "include_blocked", "include_unauthenticated", "include_trash")  # none such kept here


def values_of(call: Call, name: str) -> tuple[str, ...]:
    """A list query value as the SDK sends it (one JSON array: `labels=["a","b"]`), or a plain value."""
    text = call.request.query.get(name)
    if text is None or text == "":
        return ()
    found: object = text
    if text.startswith("["):
        with contextlib.suppress(ValueError):  # not JSON: the value itself (a subject like "[JIRA] ...")
            found = json.loads(text)
    found = [found] if isinstance(found, str) else found
    if not isinstance(found, list) or not all(isinstance(v, str) and 0 < len(v) <= 320 for v in found) or len(found) > 20:
        raise ApiError(400, "invalid_request", f"{name}: at most 20 strings of 1 to 320 characters")
    return tuple(found)


def instant(call: Call, name: str) -> datetime | None:
    text = call.request.query.get(name)
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ApiError(400, "invalid_request", f"{name}: is not an ISO-8601 date-time") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def flag(call: Call, name: str) -> bool:
    text = call.request.query.get(name, "false")
    if text not in ("true", "false"):
        raise ApiError(400, "invalid_request", f"{name}: must be true or false")
    return text == "true"


def list_filter(call: Call, names: tuple[str, str, str]) -> views.Filter:
    """The filters of a list of messages or threads: `labels` (all of them; `sent`, `received` and `unread`
    are the message's state), `before`, `after`, and each of `names` (sender, recipient, subject: a part
    of it, any case, every value given)."""
    direction, unread, own = None, None, []
    for label in values_of(call, "labels"):
        match label:
            case "sent" | "received":
                wanted = "outbound" if label == "sent" else "inbound"
                direction = wanted if direction in (None, wanted) else "neither"  # both: nothing has both
            case "unread":
                direction = "inbound" if direction in (None, "inbound") else "neither"
                unread = True
            case _:
                own.append(label)
    for name in IGNORED:
        flag(call, name)
    since, until = instant(call, "after"), instant(call, "before")
    senders, recipients, subjects = (values_of(call, n) for n in names)
    return views.Filter(
        direction=direction, unread=unread, labels=tuple(own), since=since, until=until, senders=senders,
        recipients=recipients, subjects=subjects,
    )  # fmt: skip


@route(
    "GET", "/v0/inboxes/{inbox_id}/messages", scope="read", response=MessageList, errors=(400, 404),
    summary="The inbox's messages, newest first (`ascending`: oldest), `limit` 1-100, `page_token`; filtered by "
    "`labels`, `before`, `after`, `from`, `to`, `subject` (JSON arrays: every value must match)", **DIALECT,
)  # fmt: skip
async def list_messages(call: Call) -> web.Response:
    inbox = await find_inbox(call)
    limit, ascending = query_limit(call, 50), flag(call, "ascending")
    rows, more = await views.filtered_page(
        ctx(call).pool, inbox["org_id"], inbox["id"], list_filter(call, MESSAGE_FILTERS), after=page_token(call),
        ascending=ascending, limit=limit,
    )  # fmt: skip
    token = cursors.encode(rows[-1]["created_at"], rows[-1]["id"]) if more else None
    return json_model(MessageList(count=len(rows), limit=limit, next_page_token=token, messages=[message_item(r) for r in rows]))


@route(
    "GET", "/v0/inboxes/{inbox_id}/messages/{message_id}", scope="read", response=Message, errors=(404,),
    summary="A message, whole", **DIALECT,
)  # fmt: skip
async def get_message(call: Call) -> web.Response:
    return json_model(message_out(await find_message(call, await find_inbox(call))))


@route(
    "GET", "/v0/inboxes/{inbox_id}/messages/{message_id}/attachments/{attachment_id}", scope="read",
    response=AttachmentLink, errors=(404, 503), summary="One of the message's files: a link to its bytes, valid 15 minutes",
    **DIALECT,
)  # fmt: skip
async def get_attachment(call: Call) -> web.Response:
    row = await find_message(call, await find_inbox(call))
    wanted = call.param("attachment_id")
    found = next((a for a in row["attachments"] if attachment_id(a["sha256"], a["filename"]) == wanted), None)
    if found is None:
        raise ApiError(404, "not_found", "Attachment not found")
    url, expires = downloads.link(ctx(call), row["id"], found["sha256"], found["filename"])
    return json_model(
        AttachmentLink(
            attachment_id=wanted, filename=found["filename"], size=found["size"], content_type=found["content_type"],
            download_url=url, expires_at=iso(datetime.fromtimestamp(expires, UTC)),
        )
    )  # fmt: skip


@route(
    "GET", "/v0/inboxes/{inbox_id}/messages/{message_id}/raw", scope="read", response=RawMessage, errors=(404, 503),
    summary="A link to the message as it was sent or received (RFC 5322), valid 15 minutes", **DIALECT,
)  # fmt: skip
async def get_raw(call: Call) -> web.Response:
    c = ctx(call)
    row = await find_message(call, await find_inbox(call))
    if not row["raw_sha256"]:
        raise ApiError(404, "not_found", "the message's raw form is not kept (it has not been sent yet)")
    try:
        size = len(await c.blobs.get(row["raw_sha256"]))
    except BlobMissing:
        raise ApiError(404, "not_found", "the message's raw form is no longer kept") from None
    url, expires = downloads.link(c, row["id"], row["raw_sha256"], "message.eml")
    return json_model(
        RawMessage(
            message_id=ids.render("message", row["id"]), size=size, download_url=url,
            expires_at=iso(datetime.fromtimestamp(expires, UTC)),
        )
    )  # fmt: skip


async def find_message(call: Call, inbox: asyncpg.Record, message_id: str | None = None) -> asyncpg.Record:
    """The inbox's message the path names (or `message_id`); 404 if it has none such."""
    message_id = ids.parse("message", message_id or call.param("message_id"))
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


def incoming(files: list[SendAttachment]) -> tuple[list[EventAttachment], dict[str, bytes]]:
    """The files a request attaches, and their bytes by hash; 400 naming one that must not be sent."""
    uploads = [attachments.Upload(f"attachments[{i}]", f.filename, f.content_type, f.content) for i, f in enumerate(files)]
    attachments.check(uploads)
    return attachments.attachments_of(uploads)


async def send(call: Call, inbox: asyncpg.Record, cmd: Command, files: dict[str, bytes] | None = None) -> web.Response:
    """A send, reply or forward (`files`: the bytes of the files it attaches, by hash), once per
    Idempotency-Key, answered with its message's and thread's ids (403 when it was refused: a suppressed
    recipient, the daily cap)."""

    async def answer(_: Command, outcome: Outcome, __: list) -> web.Response:
        rejected(outcome)
        [m] = outcome.messages
        return json_model(
            SendMessageResponse(message_id=ids.render("message", m.message_id), thread_id=ids.render("thread", m.conv_id))
        )

    return await send_one(call, inbox, NAME, lambda: cmd, answer, files=files)


@route(
    "POST", "/v0/inboxes/{inbox_id}/messages/{message_id}/reply", scope="send", body=ReplyMessage,
    response=SendMessageResponse, errors=(400, 403, 404, 409, 413, 429, 503), idempotent=True,
    summary="Reply in the message's thread: to its sender, everyone on it (`reply_all`), or `to`", **DIALECT,
)  # fmt: skip
async def reply(call: Call) -> web.Response:
    b: ReplyMessage = call.body
    attached, files = incoming(b.attachments)
    content = Content(text=b.text, html=b.html, cc=b.cc, bcc=b.bcc, labels=b.labels, attachments=attached)
    return await replying(call, b.to, b.reply_all, content, files)


@route(
    "POST", "/v0/inboxes/{inbox_id}/messages/{message_id}/reply-all", scope="send", body=ReplyAll,
    response=SendMessageResponse, errors=(400, 403, 404, 409, 413, 429, 503), idempotent=True,
    summary="Reply to everyone on the message but this inbox, in its thread", **DIALECT,
)  # fmt: skip
async def reply_all(call: Call) -> web.Response:
    b: ReplyAll = call.body
    attached, files = incoming(b.attachments)
    return await replying(call, None, True, Content(text=b.text, html=b.html, labels=b.labels, attachments=attached), files)


async def replying(
    call: Call, to: list[str] | None, everyone: bool, content: Content, files: dict[str, bytes]
) -> web.Response:
    inbox = await find_inbox(call)
    original = await find_message(call, inbox)
    return await send(call, inbox, await reply_command(call, inbox, original, to, everyone, content), files)


async def reply_command(
    call: Call, inbox: asyncpg.Record, original: asyncpg.Record, to: list[str] | None, everyone: bool,
    content: Content,
) -> Reply:
    """A reply to `original` in its thread: to its sender, everyone on it but this inbox (`everyone`), or `to`."""
    if content.text is None and content.html is None:
        raise ApiError(400, "invalid_request", "text: text or html is required")
    thread = await directory.find_thread(ctx(call), inbox, original["conv_id"])
    if everyone and to is None:
        ours = inbox["handle"].lower()
        on_it = [original["from_addr"], *(original["to_addrs"] or []), *(original["cc_addrs"] or [])]
        to = list(dict.fromkeys(a for a in on_it if a and a.lower() != ours)) or None
    return Reply(
        identity_id=inbox["id"], conv_id=thread["conv_id"], to=thread["counterpart"], recipients=to,
        content=content.model_copy(update={"dialect": NAME}), answering=original["rfc_message_id"],
    )  # fmt: skip


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
    theirs, files = incoming(b.attachments)
    try:  # the original's files go along, named clear of the caller's
        carried = await attachments.carry(
            ctx(call).blobs, [EventAttachment.model_validate(a) for a in original["attachments"]], theirs, files,
            "the original's file",
        )  # fmt: skip
    except BlobMissing:
        raise ApiError(502, "storage_unavailable", "the original's attachments could not be loaded") from None
    content = Content(
        subject=forward.subject(original["subject"], b.subject), text=text, html=html, cc=b.cc, bcc=b.bcc,
        labels=b.labels, dialect=NAME, attachments=[*theirs, *carried],
        forwarded=Forwarded(message_id=original["id"], rfc_message_id=original["rfc_message_id"]),
    )  # fmt: skip
    return await send(call, inbox, NewSend(identity_id=inbox["id"], messages=[b.to], content=content), files)


# --- threads -----------------------------------------------------------------------------------------


async def threads_of(call: Call, inbox: asyncpg.Record | None) -> web.Response:
    limit, ascending = query_limit(call, 50), flag(call, "ascending")
    found, more = await views.thread_page(
        ctx(call).pool, call.principal.org_id, inbox and inbox["id"], list_filter(call, THREAD_FILTERS),
        after=page_token(call), ascending=ascending, limit=limit,
    )  # fmt: skip
    token = cursors.encode(found[-1][0]["updated_at"], found[-1][0]["id"]) if more else None
    threads = [thread_item(conv, rows) for conv, rows in found]
    return json_model(ThreadList(count=len(threads), limit=limit, next_page_token=token, threads=threads))


@route(
    "GET", "/v0/inboxes/{inbox_id}/threads", scope="read", response=ThreadList, errors=(400, 404),
    summary="The inbox's threads, most recently active first (`ascending`: least), `limit` 1-100, `page_token`; "
    "filtered by `labels`, `before`, `after`, `senders`, `recipients`, `subject`", **DIALECT,
)  # fmt: skip
async def list_threads(call: Call) -> web.Response:
    return await threads_of(call, await find_inbox(call))


@route(
    "GET", "/v0/threads", scope="read", response=ThreadList, errors=(400,),
    summary="Every inbox's threads, as an inbox's are listed", **DIALECT,
)  # fmt: skip
async def list_all_threads(call: Call) -> web.Response:
    return await threads_of(call, None)


async def find_thread(call: Call, inbox: asyncpg.Record | None) -> tuple[asyncpg.Record, list[asyncpg.Record]]:
    """The thread the path names (of `inbox`, if given) and its messages in order; 404 if it has none."""
    conv_id = ids.parse("thread", call.param("thread_id"))
    found = conv_id and await views.conversation(ctx(call).pool, call.principal.org_id, conv_id)
    if not found or not found[1] or (inbox is not None and found[0]["identity_id"] != inbox["id"]):
        raise ApiError(404, "not_found", "Thread not found")
    return found


async def thread_shown(call: Call, inbox: asyncpg.Record | None) -> web.Response:
    """A thread and a page of its messages: the newest `limit` (in order), then older ones by `page_token`."""
    conv, rows = await find_thread(call, inbox)
    limit, before = query_limit(call, 100), page_token(call)
    older = [r for r in rows if before is None or (r["created_at"], r["id"]) < before]
    page = older[-limit:]
    token = cursors.encode(page[0]["created_at"], page[0]["id"]) if page and len(older) > len(page) else None
    return json_model(thread_out(conv, rows, page, token))


@route(
    "GET", "/v0/inboxes/{inbox_id}/threads/{thread_id}", scope="read", response=Thread, errors=(400, 404),
    summary="A thread with its newest messages in order (`limit` 1-100; `page_token`: older ones)", **DIALECT,
)  # fmt: skip
async def get_thread(call: Call) -> web.Response:
    return await thread_shown(call, await find_inbox(call))


@route(
    "GET", "/v0/threads/{thread_id}", scope="read", response=Thread, errors=(400, 404),
    summary="A thread of any inbox, as an inbox's is shown", **DIALECT,
)  # fmt: skip
async def get_any_thread(call: Call) -> web.Response:
    return await thread_shown(call, None)


async def thread_deleted(call: Call, inbox: asyncpg.Record | None) -> web.Response:
    conv, rows = await find_thread(call, inbox)
    owner = {"org_id": conv["org_id"], "id": conv["identity_id"]}
    await flags.delete(ctx(call), owner, [r["id"] for r in rows], call.request_id)
    return web.Response(status=204)


@route(
    "DELETE", "/v0/inboxes/{inbox_id}/threads/{thread_id}", scope="send", status=204, errors=(404,),
    summary="Delete a thread's messages: gone from every dialect's reads (their audit trail stays)", **DIALECT,
)  # fmt: skip
async def delete_thread(call: Call) -> web.Response:
    return await thread_deleted(call, await find_inbox(call))


@route(
    "DELETE", "/v0/threads/{thread_id}", scope="send", status=204, errors=(404,),
    summary="Delete a thread of any inbox, as an inbox's is deleted", **DIALECT,
)  # fmt: skip
async def delete_any_thread(call: Call) -> web.Response:
    return await thread_deleted(call, None)


# --- lists: `receive` lists are the organization's sender rules (who may mail its inboxes); the `send`
# block list is its suppressions (who it never mails: bounces, complaints and unsubscribes are on it too).

KEPT = {("receive", "allow"), ("receive", "block"), ("send", "block")}


def list_of(call: Call) -> tuple[str, str]:
    """The list of the path (direction, type); 400 naming the part this server keeps no list of."""
    direction, kind = call.param("direction"), call.param("type")
    if kind not in ("allow", "block"):
        raise ApiError(400, "invalid_request", "type: must be allow or block")
    if (direction, kind) not in KEPT:
        raise ApiError(
            400, "invalid_request",
            f"direction: no {direction} {kind} list is kept here (the receive lists, and the send block list are)",
        )  # fmt: skip
    return direction, kind


def suppressed(row: asyncpg.Record) -> dict:
    """A suppression as a `send` block list's entry."""
    return {"pattern": row["address"], "action": "block", **{k: row[k] for k in ("org_id", "created_at", "reason")}}


@route(
    "GET", "/v0/lists/{direction}/{type}", scope="read", response=ListEntries, errors=(400,),
    summary="A list's entries, by entry (`receive`: the sender rules; `send` block: the suppressions)", **DIALECT,
)  # fmt: skip
async def list_entries(call: Call) -> web.Response:
    direction, kind = list_of(call)
    pool, org_id = ctx(call).pool, call.principal.org_id
    if direction == "send":
        rows = [suppressed(r) for r in await pool.fetch("SELECT * FROM suppressions WHERE org_id = $1 AND active ORDER BY address", org_id)]
    else:
        rows = await pool.fetch("SELECT * FROM sender_rules WHERE org_id = $1 AND action = $2 ORDER BY pattern", org_id, kind)
    return json_model(ListEntries(count=len(rows), entries=[entry_out(r, direction) for r in rows]))


@route(
    "POST", "/v0/lists/{direction}/{type}", scope="admin", body=AddListEntry, response=ListEntry, errors=(400,),
    summary="Allow or block a sender (an address, or a domain with its subdomains; an entry moves from one "
    "receive list to the other), or never mail an address again (`send` block)", **DIALECT,
)  # fmt: skip
async def add_entry(call: Call) -> web.Response:
    direction, kind = list_of(call)
    b: AddListEntry = call.body
    c, org_id = ctx(call), call.principal.org_id
    if direction == "send":
        if "@" not in b.entry:
            raise ApiError(400, "invalid_request", "entry: the send block list takes addresses, not domains")
        if await suppressing.find(c, org_id, b.entry) is None:
            await suppressing.add(c, org_id, b.entry, "manual", call.request_id)
        entry = entry_out(suppressed(await suppressing.find(c, org_id, b.entry)), direction)
        return json_model(entry.model_copy(update={"reason": b.reason or entry.reason}))
    row = await c.pool.fetchrow(
        """INSERT INTO sender_rules (org_id, pattern, action) VALUES ($1, $2, $3)
           ON CONFLICT (org_id, pattern) DO UPDATE SET action = EXCLUDED.action RETURNING *""",
        org_id, b.entry, kind,
    )  # fmt: skip
    return json_model(entry_out(row, direction).model_copy(update={"reason": b.reason}))


async def find_entry(call: Call) -> tuple[str, dict | asyncpg.Record]:
    direction, kind = list_of(call)
    c, org_id, entry = ctx(call), call.principal.org_id, call.param("entry")
    if direction == "send":
        row = await suppressing.find(c, org_id, entry)
        found = row and suppressed(row)
    else:
        found = await c.pool.fetchrow(
            "SELECT * FROM sender_rules WHERE org_id = $1 AND pattern = lower($2) AND action = $3", org_id, entry, kind
        )
    if not found:
        raise ApiError(404, "not_found", "Entry not found")
    return direction, found


@route(
    "GET", "/v0/lists/{direction}/{type}/{entry}", scope="read", response=ListEntry, errors=(400, 404),
    summary="A list's entry", **DIALECT,
)  # fmt: skip
async def get_entry(call: Call) -> web.Response:
    direction, row = await find_entry(call)
    return json_model(entry_out(row, direction))


@route(
    "DELETE", "/v0/lists/{direction}/{type}/{entry}", scope="admin", status=204, errors=(400, 404),
    summary="Remove a list's entry (`send` block: mail the address again)", **DIALECT,
)  # fmt: skip
async def remove_entry(call: Call) -> web.Response:
    direction, row = await find_entry(call)
    if direction == "send":
        await suppressing.remove(ctx(call), row["org_id"], row["pattern"], call.request_id)
    else:
        await ctx(call).pool.execute("DELETE FROM sender_rules WHERE org_id = $1 AND pattern = $2", row["org_id"], row["pattern"])
    return web.Response(status=204)


# --- webhooks: AgentMail's bodies, signed by the Svix scheme (svix-id, svix-timestamp, svix-signature) ----


async def inbox_uuids(call: Call, inbox_ids: list[str]) -> list[UUID]:
    """The identities the inboxes named are; 400 naming one the organization has none of."""
    found = []
    for address in inbox_ids:
        try:
            found.append((await directory.find_identity(ctx(call), call.principal.org_id, address))["id"])
        except NotFound:
            raise ApiError(400, "invalid_request", f"inbox_ids: there is no inbox {address}") from None
    return list(dict.fromkeys(found))


async def webhook_shown(call: Call, row: asyncpg.Record) -> Webhook:
    handles = None
    if row["inbox_ids"]:
        named = await ctx(call).pool.fetch("SELECT handle FROM identities WHERE id = ANY($1::uuid[])", row["inbox_ids"])
        handles = sorted(r["handle"] for r in named)
    return webhook_out(row, ctx(call).secrets.open(row["secret"]), handles)


async def find_webhook(call: Call) -> asyncpg.Record:
    webhook_id = ids.parse("webhook", call.param("webhook_id"))
    row = webhook_id and await ctx(call).pool.fetchrow(
        "SELECT * FROM webhook_endpoints WHERE id = $1 AND org_id = $2 AND dialect = $3", webhook_id,
        call.principal.org_id, NAME,
    )  # fmt: skip
    if not row:  # /v1/webhooks' endpoints are theirs
        raise ApiError(404, "not_found", "Webhook not found")
    return row


@route(
    "POST", "/v0/webhooks", scope="admin", body=CreateWebhook, response=Webhook, errors=(400,),
    summary="Register a webhook endpoint for AgentMail's events (of `inbox_ids` only, if given); `client_id` "
    "makes one endpoint however often it is created", **DIALECT,
)  # fmt: skip
async def create_webhook(call: Call) -> web.Response:
    c = ctx(call)
    b: CreateWebhook = call.body
    await check_destination(call, b.url)
    if b.inbox_ids == []:
        raise ApiError(400, "invalid_request", "inbox_ids: name at least one inbox, or leave it out for every inbox")
    inboxes = await inbox_uuids(call, b.inbox_ids) if b.inbox_ids else None
    row = await c.pool.fetchrow(
        """INSERT INTO webhook_endpoints (id, org_id, url, events, secret, dialect, inbox_ids, client_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (org_id, client_id) WHERE client_id IS NOT NULL DO NOTHING RETURNING *""",
        ids.new_id(), call.principal.org_id, b.url, list(dict.fromkeys(b.event_types)),
        c.secrets.seal(signing.new_secret()), NAME, inboxes, b.client_id,
    )  # fmt: skip
    if row is None:  # made before under this client_id
        row = await c.pool.fetchrow(
            "SELECT * FROM webhook_endpoints WHERE org_id = $1 AND client_id = $2", call.principal.org_id, b.client_id
        )
    return json_model(await webhook_shown(call, row))


@route(
    "GET", "/v0/webhooks", scope="admin", response=WebhookList, errors=(400,),
    summary="The organization's webhook endpoints, newest first (`limit` 1-100, `page_token`)", **DIALECT,
)  # fmt: skip
async def list_webhooks(call: Call) -> web.Response:
    limit, after = query_limit(call, 50), page_token(call)
    rows = await ctx(call).pool.fetch(
        """SELECT * FROM webhook_endpoints WHERE org_id = $1 AND dialect = $5
              AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
            ORDER BY created_at DESC, id DESC LIMIT $4""",
        call.principal.org_id, after and after[0], after and after[1], limit + 1, NAME,
    )  # fmt: skip
    more, rows = len(rows) > limit, rows[:limit]
    token = cursors.encode(rows[-1]["created_at"], rows[-1]["id"]) if more else None
    shown = [await webhook_shown(call, r) for r in rows]
    return json_model(WebhookList(count=len(shown), limit=limit, next_page_token=token, webhooks=shown))


@route(
    "GET", "/v0/webhooks/{webhook_id}", scope="admin", response=Webhook, errors=(404,),
    summary="A webhook endpoint, with its secret (an admin key's read, as every read of a secret is)",
    **DIALECT,
)  # fmt: skip
async def get_webhook(call: Call) -> web.Response:
    return json_model(await webhook_shown(call, await find_webhook(call)))


@route(
    "PATCH", "/v0/webhooks/{webhook_id}", scope="admin", body=UpdateWebhook, response=Webhook, errors=(400, 404),
    summary="Replace its event types, add and remove inboxes, enable or disable it", **DIALECT,
)  # fmt: skip
async def update_webhook(call: Call) -> web.Response:
    row = await find_webhook(call)
    b: UpdateWebhook = call.body
    removed = set(await inbox_uuids(call, b.remove_inbox_ids))
    inboxes = [i for i in row["inbox_ids"] or [] if i not in removed]
    inboxes += [i for i in await inbox_uuids(call, b.add_inbox_ids) if i not in inboxes]
    if row["inbox_ids"] and not inboxes:
        raise ApiError(400, "invalid_request", "remove_inbox_ids: would leave no inbox (delete the webhook instead)")
    row = await ctx(call).pool.fetchrow(
        """UPDATE webhook_endpoints
              SET events = coalesce($2, events), inbox_ids = $3, enabled = coalesce($4, enabled),
                  disabled_reason = CASE WHEN $4 THEN NULL WHEN $4 = false THEN 'disabled by the API'
                                         ELSE disabled_reason END,
                  failing_since = CASE WHEN $4 THEN NULL ELSE failing_since END, updated_at = now()
            WHERE id = $1 RETURNING *""",
        row["id"], b.event_types and list(dict.fromkeys(b.event_types)), inboxes or None, b.enabled,
    )  # fmt: skip
    return json_model(await webhook_shown(call, row))


@route(
    "DELETE", "/v0/webhooks/{webhook_id}", scope="admin", status=204, errors=(404,),
    summary="Remove a webhook endpoint and its pending deliveries", **DIALECT,
)  # fmt: skip
async def delete_webhook(call: Call) -> web.Response:
    row = await find_webhook(call)
    await ctx(call).pool.execute("DELETE FROM webhook_endpoints WHERE id = $1", row["id"])
    return web.Response(status=204)


# --- drafts: the core's drafts (services/ingress/core/drafts.py), shown as AgentMail shows them ----------
#
# A draft is pending until sent; one with `send_at` is approved at once (unless its inbox's sends wait for
# a person) and shown as `scheduled` until it fires. A sent, deleted or rejected draft is no longer one.

SHOWN_DRAFT = """SELECT d.*, i.handle, coalesce(s.state, CASE WHEN d.status = 'approved' THEN 'scheduled' END) AS timer
                   FROM drafts d JOIN identities i ON i.id = d.identity_id
                   LEFT JOIN scheduled_sends s ON s.message_id = d.message_ids[1]"""
DRAFTS = f"""{SHOWN_DRAFT}
            WHERE d.org_id = $1 AND ($2::uuid IS NULL OR d.identity_id = $2)
              AND (d.status = 'pending' OR (d.status = 'approved' AND s.state = 'scheduled'))"""


def rejected(outcome: Outcome) -> None:
    """403 with the reason if the send was refused (a suppressed recipient, the daily cap)."""
    m = outcome.messages[0]
    if m.state == "rejected":
        raise ApiError(403, "forbidden", f"the message was rejected: {m.reason}")


def draft_out(row: asyncpg.Record, content: Content) -> Draft:
    p = drafts.request_of(row).payload
    text = content.text or ""
    return Draft(
        inbox_id=row["handle"], draft_id=ids.render("draft", row["id"]), labels=list(content.labels),
        to=drafts.recipients(row),
        cc=list(content.cc) or None, bcc=list(content.bcc) or None, subject=content.subject or None,
        preview=" ".join(text.split())[:200] or None, send_status="scheduled" if row["timer"] == "scheduled" else None,
        attachments=attachments_out({"attachments": [a.model_dump() for a in content.attachments]}),
        send_at=iso(p.send_at), updated_at=iso(row["updated_at"]), text=content.text, html=content.html,
        created_at=iso(row["created_at"]),
    )  # fmt: skip


async def draft_row(call: Call, inbox: asyncpg.Record | None, draft_id: UUID | None) -> asyncpg.Record:
    """The organization's draft (of `inbox`, if given) while it is one; 404 once sent, deleted or rejected."""
    row = draft_id and await ctx(call).pool.fetchrow(
        f"{DRAFTS} AND d.id = $3", call.principal.org_id, inbox and inbox["id"], draft_id
    )
    if not row:
        raise ApiError(404, "not_found", "Draft not found")
    return row


async def find_draft(call: Call, inbox: asyncpg.Record | None) -> asyncpg.Record:
    """The draft the path names."""
    return await draft_row(call, inbox, ids.parse("draft", call.param("draft_id")))


async def draft_shown(call: Call, row: asyncpg.Record) -> web.Response:
    content = await bodies.inline(ctx(call).blobs, drafts.request_of(row).payload.content)
    return json_model(draft_out(row, content))


def draft_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return fire_at(value, None, datetime.now(UTC), field="send_at")
    except ScheduleError as exc:
        raise ApiError(400, "invalid_request", str(exc)) from None


async def scheduled_unless_held(call: Call, inbox: asyncpg.Record, row: asyncpg.Record) -> asyncpg.Record:
    """A pending draft with a `send_at` is scheduled at once, unless its inbox's sends wait for a person."""
    if row["status"] != "pending" or inbox["require_approval"] or drafts.request_of(row).payload.send_at is None:
        return row
    _, outcome = await drafts.approve(ctx(call), inbox["org_id"], row["id"], call.principal.key_id, call.request_id)
    rejected(outcome)
    # Scheduled (or, not decided in time, `queued`: it will be): shown as it is, whatever the view says yet.
    shown = await ctx(call).pool.fetchrow(f"{SHOWN_DRAFT} WHERE d.id = $1", row["id"])
    return shown


@route(
    "POST", "/v0/inboxes/{inbox_id}/drafts", scope="send", body=CreateDraft, response=Draft,
    errors=(400, 403, 404, 409, 413, 503),
    summary="Keep a message (or, `in_reply_to`, a reply) to send later; with `send_at` it goes out by itself",
    **DIALECT,
)  # fmt: skip
async def create_draft(call: Call) -> web.Response:
    c, inbox = ctx(call), await find_inbox(call)
    b: CreateDraft = call.body
    send_at = draft_time(b.send_at)
    attached, files = incoming(b.attachments)
    content = Content(
        subject=b.subject or "", text=b.text, html=b.html, cc=b.cc, bcc=b.bcc, labels=b.labels, dialect=NAME,
        attachments=attached,
    )  # fmt: skip
    if b.in_reply_to is not None:
        if ids.parse("message", b.in_reply_to) is None:
            raise ApiError(400, "invalid_request", "in_reply_to: is not a message id (msg_...)")
        original = await find_message(call, inbox, b.in_reply_to)
        cmd: Command = await reply_command(call, inbox, original, b.to or None, b.reply_all, content)
    elif not b.to:
        raise ApiError(400, "invalid_request", "to: a draft needs a recipient (or in_reply_to, a message it answers)")
    else:
        content = content.model_copy(update={"unsubscribe": await directory.wants_unsubscribe(c, inbox["org_id"], None)})
        cmd = NewSend(identity_id=inbox["id"], messages=[b.to], content=content)
    cmd = cmd.model_copy(update={"draft": True, "send_at": send_at})
    seed = b.client_id and uuid.uuid5(inbox["id"], f"draft:{b.client_id}")  # the same client_id, the same draft
    outcome = await submit(c, cmd, inbox, IdSource(seed), files, correlation_id=call.request_id, origin=origin_of(call))
    try:
        row = await draft_row(call, inbox, outcome.messages[0].draft_id)
    except ApiError:  # made before under this client_id, and since sent or deleted
        raise ApiError(409, "conflict", "client_id: its draft was already sent or deleted") from None
    return await draft_shown(call, await scheduled_unless_held(call, inbox, row))


async def list_of_drafts(call: Call, inbox: asyncpg.Record | None) -> web.Response:
    limit, after = query_limit(call, 50), page_token(call)
    rows = await ctx(call).pool.fetch(
        f"""{DRAFTS} AND ($3::timestamptz IS NULL OR (d.updated_at, d.id) < ($3, $4))
            ORDER BY d.updated_at DESC, d.id DESC LIMIT $5""",
        call.principal.org_id, inbox and inbox["id"], after and after[0], after and after[1], limit + 1,
    )  # fmt: skip
    more, rows = len(rows) > limit, rows[:limit]
    token = cursors.encode(rows[-1]["updated_at"], rows[-1]["id"]) if more else None
    blobs = ctx(call).blobs
    items = [draft_out(r, await bodies.inline(blobs, drafts.request_of(r).payload.content)) for r in rows]
    return json_model(DraftList(count=len(items), limit=limit, next_page_token=token, drafts=items))


@route(
    "GET", "/v0/inboxes/{inbox_id}/drafts", scope="read", response=DraftList, errors=(400, 404),
    summary="The inbox's drafts, last edited first (`limit` 1-100, `page_token`)", **DIALECT,
)  # fmt: skip
async def list_drafts(call: Call) -> web.Response:
    return await list_of_drafts(call, await find_inbox(call))


@route(
    "GET", "/v0/drafts", scope="read", response=DraftList, errors=(400,),
    summary="Every inbox's drafts, last edited first (`limit` 1-100, `page_token`)", **DIALECT,
)  # fmt: skip
async def list_all_drafts(call: Call) -> web.Response:
    return await list_of_drafts(call, None)


@route(
    "GET", "/v0/inboxes/{inbox_id}/drafts/{draft_id}", scope="read", response=Draft, errors=(404,),
    summary="A draft, whole", **DIALECT,
)  # fmt: skip
async def get_draft(call: Call) -> web.Response:
    return await draft_shown(call, await find_draft(call, await find_inbox(call)))


@route("GET", "/v0/drafts/{draft_id}", scope="read", response=Draft, errors=(404,), summary="A draft, whole", **DIALECT)
async def get_any_draft(call: Call) -> web.Response:
    return await draft_shown(call, await find_draft(call, None))


def still_pending(row: asyncpg.Record) -> None:
    if row["status"] != "pending":
        raise ApiError(409, "conflict", "the draft is scheduled: delete it (which cancels it) and make another")


@route(
    "PATCH", "/v0/inboxes/{inbox_id}/drafts/{draft_id}", scope="send", body=UpdateDraft, response=Draft,
    errors=(400, 404, 409),
    summary="Edit a draft not yet scheduled: subject, text, html, labels, send_at (null: unscheduled)", **DIALECT,
)  # fmt: skip
async def update_draft(call: Call) -> web.Response:
    inbox = await find_inbox(call)
    row = await find_draft(call, inbox)
    still_pending(row)
    b: UpdateDraft = call.body
    changes = b.model_dump(exclude_unset=True)
    if "send_at" in changes:
        draft_time(changes["send_at"])  # a bad time is a 400 naming send_at
        changes["sendAt"] = changes.pop("send_at")
    for key, empty in (("labels", []), ("subject", "")):
        if key in changes and changes[key] is None:  # null: cleared
            changes[key] = empty
    try:
        await drafts.update(ctx(call), inbox["org_id"], row["id"], changes, call.principal.key_id, call.request_id)
    except Conflict:  # scheduled or sent meanwhile
        raise ApiError(409, "conflict", "the draft is no longer pending") from None
    return await draft_shown(call, await scheduled_unless_held(call, inbox, await draft_row(call, inbox, row["id"])))


@route(
    "DELETE", "/v0/inboxes/{inbox_id}/drafts/{draft_id}", scope="send", status=204, errors=(404, 409),
    summary="Delete a draft: it is never sent (a scheduled one is cancelled; 409 if it fired meanwhile)", **DIALECT,
)  # fmt: skip
async def delete_draft(call: Call) -> web.Response:
    row = await find_draft(call, await find_inbox(call))
    await scheduling.cancel(ctx(call), row["org_id"], row["message_ids"][0], call.request_id, call.principal.key_id)
    return web.Response(status=204)


@route(
    "POST", "/v0/inboxes/{inbox_id}/drafts/{draft_id}/send", scope="send", body=SendDraft, body_optional=True,
    response=SendMessageResponse, errors=(400, 403, 404, 409, 503), idempotent=True,
    summary="Send a draft now (at its send_at, if it has one), once however often it is sent; a draft of an "
    "inbox whose sends wait for a person needs the `approve` scope", **DIALECT,
)  # fmt: skip
async def send_draft(call: Call) -> web.Response:
    c, inbox = ctx(call), await find_inbox(call)
    b: SendDraft = call.body or SendDraft()

    async def run(_: IdSource) -> web.Response:  # a repeat under the same Idempotency-Key answers the same
        row = await find_draft(call, inbox)
        still_pending(row)
        if inbox["require_approval"] and not call.principal.allows("approve"):
            raise ApiError(403, "forbidden", "this inbox's sends wait for a person: approving needs the `approve` scope")
        if b.add_labels or b.remove_labels:
            labels = [x for x in drafts.request_of(row).payload.content.labels if x not in b.remove_labels]
            labels += [x for x in b.add_labels if x not in labels]
            await drafts.update(c, inbox["org_id"], row["id"], {"labels": labels}, call.principal.key_id, call.request_id)
        _, outcome = await drafts.approve(c, inbox["org_id"], row["id"], call.principal.key_id, call.request_id)
        rejected(outcome)
        [m] = outcome.messages
        return json_model(
            SendMessageResponse(message_id=ids.render("message", m.message_id), thread_id=ids.render("thread", m.conv_id))
        )

    return await idempotent(call, c.pool, c.settings.send_answered_within_s, run)


# --- the WebSocket: `subscribe`, then AgentMail's events as they are archived ---------------------------

LIVE = ["MessageReceived", "MessageSent", "MessageDelivered", "MessageBounced", "MessageComplained", "SendRejected"]
LIVE_WAIT_S = 30.0


@dataclass
class Subscription:
    event_types: set[str] | None = None  # None: every event
    identities: set[UUID] | None = None  # None: every inbox's


def frame_error(message: str) -> str:
    return json.dumps({"type": "error", "name": "ValidationError", "message": message})


@route(
    "GET", "/v0", scope="read", errors=(400, 401),
    summary="AgentMail's WebSocket: send `{\"type\": \"subscribe\", \"event_types\", \"inbox_ids\"}`, answered "
    "`subscribed`; then each event (`message.received` with its message and thread, ...) as it happens",
    **DIALECT,
)  # fmt: skip
async def live_events(call: Call) -> web.StreamResponse:
    c, org_id = ctx(call), call.principal.org_id
    ws = web.WebSocketResponse(heartbeat=20)
    if not ws.can_prepare(call.request).ok:
        raise ApiError(400, "invalid_request", "Upgrade: this is a WebSocket; connect with a WebSocket client")
    await ws.prepare(call.request)
    sub, pusher = Subscription(), None

    async def push(after: int) -> None:
        try:
            while True:
                rows = await c.feed.until(org_id, lambda after=after: page(c.pool, org_id, after, LIVE, 100), LIVE_WAIT_S)
                for r in rows:
                    after = r["seq"]
                    event = event_from(r["event"])
                    if sub.identities is not None and event.identity_id not in sub.identities:
                        continue
                    if sub.event_types is not None and OWN.name_of(webhook_type(event)) not in sub.event_types:
                        continue
                    if (text := await shown_alone(c.pool, NAME, event)) is not None:
                        await ws.send_str(text)
        except Exception as exc:  # the database away, the socket gone: the client reconnects and subscribes again
            log.warning("websocket events stopped", error=repr(exc))
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"events stopped: reconnect")

    try:
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            try:
                asked = json.loads(frame.data)
            except ValueError:
                await ws.send_str(frame_error("the frame is not JSON"))
                continue
            if not isinstance(asked, dict) or asked.get("type") != "subscribe":
                await ws.send_str(frame_error("type: the only frame taken is subscribe"))
                continue
            try:
                types, inboxes = asked.get("event_types"), asked.get("inbox_ids")
                if asked.get("pod_ids"):
                    raise ApiError(400, "invalid_request", f"pod_ids: {agentmail.NO_PODS}")
                known = agentmail.KNOWN_EVENT_TYPES
                if types is not None and not (isinstance(types, list) and all(isinstance(t, str) and t in known for t in types)):
                    raise ApiError(400, "invalid_request", "event_types: a list of AgentMail's event types")
                if inboxes is not None and not (
                    isinstance(inboxes, list) and len(inboxes) <= 100
                    and all(isinstance(i, str) and 0 < len(i) <= 320 and i.isprintable() for i in inboxes)
                ):
                    raise ApiError(400, "invalid_request", "inbox_ids: at most 100 inbox ids")
                identities = set(await inbox_uuids(call, inboxes)) if inboxes else None
            except ApiError as exc:
                await ws.send_str(frame_error(exc.message))
                continue
            sub.event_types, sub.identities = set(types) if types else None, identities
            if pusher is None:  # events from now on
                pusher = asyncio.create_task(push(await head(c.pool, org_id)))
            await ws.send_str(json.dumps({"type": "subscribed", "event_types": types, "inbox_ids": inboxes}))
    finally:
        if pusher is not None:
            pusher.cancel()
    return ws
