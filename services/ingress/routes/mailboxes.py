"""The mailboxes dialect (SPEC 3.3): mailboxes addressed by email over the core's identities; send,
reply by Message-ID and forward through the core's send command; flags and deletes as events; lists
with keyset cursors, and attachments through short-lived signed links.

Every route answers at the seed's path and under `/api/v1/mail`, where the seed's own client (the
`inkbox` SDK) calls it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from aiohttp import web

from mail import forward
from schemas import ids
from schemas.api import mailboxes
from schemas.api.common import partial_row
from schemas.api.mailboxes import (
    NOUNS,
    CreateMailbox,
    DownloadLink,
    ForwardMessage,
    Mailbox,
    MailboxList,
    Message,
    MessageDetail,
    MessageList,
    MessagePage,
    SendMessage,
    UpdateFlags,
    attachments_of,
    mailbox_out,
    message_detail,
    message_item,
)
from schemas.commands import Command, NewSend, Reply
from schemas.events import (
    Content,
    Forwarded,
)
from schemas.limits import ATTACHMENTS_BODY
from services.common.domain import views
from services.common.domain.blobs import BlobMissing, ref_of
from services.ingress import cursors
from services.ingress.context import ctx
from services.ingress.core import attachments, directory, egress, flags, scheduling
from services.ingress.core.errors import NotFound
from services.ingress.core.outcome import Outcome
from services.ingress.core.ratelimit import Window
from services.ingress.http import ApiError, Call, json_model, query_limit, route
from services.ingress.routes import downloads
from services.ingress.sending import send_one

DIALECT_NAME = mailboxes.DIALECT.name
DIALECT = {"tag": DIALECT_NAME, "nouns": NOUNS, "error_body": mailboxes.DIALECT.error_body}
PREFIXES = ("", "/api/v1/mail")  # the seed's paths, and where its SDK calls them
LISTED = "SELECT true FROM messages WHERE id = $1"


def mailbox_route(method: str, path: str, **spec):
    """A route of this dialect, at each of PREFIXES."""

    def decorator(fn):
        for prefix in PREFIXES:
            route(method, prefix + path, operation_suffix=prefix.replace("/", "_"), **DIALECT, **spec)(fn)
        return fn

    return decorator


async def find_mailbox(call: Call):
    return await directory.find_identity(ctx(call), call.principal.org_id, call.param("email_address"))


async def find_message(call: Call, mailbox):
    return await directory.find_message(ctx(call), mailbox, ids.parse("message", call.param("message_id")))


# --- mailboxes --------------------------------------------------------------------------------------


@mailbox_route(
    "POST", "/mailboxes", scope="admin", summary="Create a mailbox (ours; not in the seed)",
    body=CreateMailbox, response=Mailbox, status=201, errors=(400, 409),
)  # fmt: skip
async def create_mailbox(call: Call) -> web.Response:
    b: CreateMailbox = call.body
    c = ctx(call)
    relay = b.smtp or c.settings.inbox_default_relay
    if relay is None:
        raise ApiError(400, "invalid_request", "smtp: is required (this server has no default relay)")
    await egress.check_account(c, b.smtp)
    account = directory.NewAccount.through(b.email_address, relay)
    # The seed limits a mailbox by the hour only: its daily cap is what a day of full hours allows.
    daily_cap = 24 * c.settings.mailbox_sends_per_hour
    mailbox, _ = await directory.create_identity(
        c, call.principal.org_id, b.email_address, daily_cap=daily_cap, timezone="UTC", name=b.display_name,
        accounts=[account], correlation_id=call.request_id, dialect=DIALECT_NAME,
    )  # fmt: skip
    return json_model(mailbox_out(mailbox), 201)


@mailbox_route(
    "GET", "/mailboxes", scope="read", summary="The organization's mailboxes (ours; not in the seed)",
    response=MailboxList,
)  # fmt: skip
async def list_mailboxes(call: Call) -> web.Response:
    rows = await directory.list_identities(ctx(call), call.principal.org_id)
    return json_model(MailboxList([mailbox_out(r) for r in rows]))


@mailbox_route(
    "GET", "/mailboxes/{email_address}", scope="read", summary="A mailbox", response=Mailbox, errors=(404,)
)
async def get_mailbox(call: Call) -> web.Response:
    return json_model(mailbox_out(await find_mailbox(call)))


# --- reading ----------------------------------------------------------------------------------------


@mailbox_route(
    "GET", "/mailboxes/{email_address}/messages", scope="read", response=MessagePage, errors=(400, 404),
    summary="The mailbox's messages, newest first, a page at a time: `limit` 1-100 (default 50), `cursor` "
    "(a previous page's `next_cursor`), `direction` (`inbound` or `outbound`)",
)  # fmt: skip
async def list_messages(call: Call) -> web.Response:
    mailbox = await find_mailbox(call)
    query = call.request.query
    direction = query.get("direction") or None
    if direction not in (None, "inbound", "outbound"):
        raise ApiError(400, "invalid_request", "direction: must be inbound or outbound")
    cursor = query.get("cursor") or None
    rows, more = await views.mailbox_page(
        ctx(call).pool, mailbox["org_id"], mailbox["id"], direction=direction,
        after=cursors.decode(cursor, datetime, UUID) if cursor else None, limit=query_limit(call, 50),
    )  # fmt: skip
    return json_model(
        MessagePage(
            items=[message_item(r) for r in rows],
            next_cursor=cursors.encode(rows[-1]["created_at"], rows[-1]["id"]) if more else None,
            has_more=more,
        )
    )


@mailbox_route(
    "GET", "/mailboxes/{email_address}/search", scope="read", response=MessageList, errors=(400, 404),
    summary="Full-text search of the mailbox (subject, text, sender), best first; `q`, `limit` 1-100",
)  # fmt: skip
async def search_messages(call: Call) -> web.Response:
    mailbox = await find_mailbox(call)
    q = call.request.query.get("q", "")
    if not q.strip():
        raise ApiError(400, "invalid_request", "q: is required")
    rows = await views.inbox_messages(
        ctx(call).pool, mailbox["org_id"], mailbox["id"], q, query_limit(call, 50)
    )
    return json_model(MessageList(items=[message_item(r) for r in rows]))


@mailbox_route(
    "GET", "/mailboxes/{email_address}/messages/{message_id}", scope="read", response=MessageDetail,
    errors=(404,), summary="A message with its bodies",
)  # fmt: skip
async def get_message(call: Call) -> web.Response:
    return json_model(message_detail(await find_message(call, await find_mailbox(call))))


# --- sending ----------------------------------------------------------------------------------------


def uploads_of(field: str, files) -> list[attachments.Upload]:
    return [
        attachments.Upload(f"{field}[{i}]", a.filename, a.content_type, a.content_base64)
        for i, a in enumerate(files)
    ]


def message_id_text(value: str) -> str:
    value = value.strip()
    return value if value.startswith("<") else f"<{value}>"


async def send(call: Call, mailbox, command, files: dict[str, bytes] | None = None) -> web.Response:
    """A send or forward, within the mailbox's rolling hour (answered in X-RateLimit-*), answered as the
    new message's list item."""
    c = ctx(call)

    async def answer(cmd: Command, outcome: Outcome, windows: list[Window]) -> web.Response:
        [m] = outcome.messages
        # Read-your-writes: the message this answer names can be read at once (a draft's, once approved).
        if m.state != "pending_approval":
            await views.shown(c.pool, LISTED, m.message_id)
        content: Content = cmd.content
        at = datetime.now(UTC)
        row = partial_row(
            id=m.message_id, org_id=mailbox["org_id"], identity_id=mailbox["id"], conv_id=m.conv_id,
            from_addr=m.mailbox_email or mailbox["handle"], inbox_address=mailbox["handle"], to_addrs=m.to,
            cc_addrs=content.cc, bcc_addrs=content.bcc, subject=content.subject, text_body=content.text,
            attachments=content.attachments, rfc_message_id=m.rfc_message_id, reply_to=content.reply_to,
            status={"accepted": "queued", "queued": "queued", "scheduled": "scheduled",
                    "pending_approval": "pending_approval"}.get(m.state, "rejected"),
            created_at=at, updated_at=at, send_at=m.send_at, draft_id=m.draft_id,
        )  # fmt: skip
        return json_model(message_item(row), 201, windows[-1].headers())  # the mailbox's own budget is the last

    return await send_one(call, mailbox, DIALECT_NAME, command, answer, files)


@mailbox_route(
    "POST", "/mailboxes/{email_address}/messages", scope="send", body=SendMessage, response=Message,
    status=201, errors=(400, 404, 409, 413, 429, 503), idempotent=True, extra_body=ATTACHMENTS_BODY,
    summary="Send a message; with `in_reply_to_message_id` it continues that message's thread",
)  # fmt: skip
async def send_message(call: Call) -> web.Response:
    c = ctx(call)
    mailbox = await find_mailbox(call)
    b: SendMessage = call.body
    r = b.recipients
    content = Content(
        subject=b.subject, text=b.body_text, html=b.body_html, cc=r.cc, bcc=r.bcc, reply_to=b.reply_to,
        dialect=DIALECT_NAME, unsubscribe=await directory.wants_unsubscribe(c, mailbox["org_id"], b.unsubscribe),
    )  # fmt: skip
    content, files = attachments.attach(
        content, uploads_of("attachments", b.attachments), mailbox["handle"], r.to
    )
    thread = None
    if b.in_reply_to_message_id:
        answered = message_id_text(b.in_reply_to_message_id)
        original = await views.answered_message(c.pool, mailbox["org_id"], mailbox["id"], answered)
        thread = original and await c.pool.fetchrow(
            "SELECT conv_id, counterpart FROM threads WHERE conv_id = $1 AND identity_id = $2",
            original["conv_id"], mailbox["id"],
        )  # fmt: skip
        if not thread:  # not one of ours: the recipient's client threads it by the headers alone
            content = content.model_copy(update={"in_reply_to": answered, "references": [answered]})

    when = scheduling.when(b, reply=bool(thread))

    def command():
        if thread:
            return Reply(
                identity_id=mailbox["id"], conv_id=thread["conv_id"], to=thread["counterpart"], recipients=r.to,
                content=content, **when.fields(),
            )  # fmt: skip
        return NewSend(identity_id=mailbox["id"], messages=[r.to], content=content, **when.fields())

    return await send(call, mailbox, command, files)


@mailbox_route(
    "POST", "/mailboxes/{email_address}/messages/{message_id}/forward", scope="send", body=ForwardMessage,
    response=Message, status=201, errors=(400, 404, 409, 413, 422, 429, 502, 503), idempotent=True,
    extra_body=ATTACHMENTS_BODY,
    summary="Forward a stored message (a new thread): `inline` below a preamble with its files, or "
    "`wrapped` as message/rfc822",
)  # fmt: skip
async def forward_message(call: Call) -> web.Response:
    c = ctx(call)
    mailbox = await find_mailbox(call)
    original = await find_message(call, mailbox)
    b: ForwardMessage = call.body
    r = b.recipients
    to, cc = (r.to, r.cc) if r.to else (r.cc, [])
    if not to:
        raise ApiError(
            400, "invalid_request", "recipients.to: a forward to bcc only is not supported; add to or cc"
        )
    note = Content(text=b.body_text, html=b.body_html, dialect=DIALECT_NAME)
    attachments.check_bodies(note, c.settings.max_body_bytes)  # the caller's note; the original's, by size
    uploads = uploads_of("additional_attachments", b.additional_attachments)
    attachments.check(uploads)
    callers, files = attachments.attachments_of(uploads)
    wrapped = b.mode == "wrapped"
    if wrapped and not original["raw_sha256"]:
        raise ApiError(
            422,
            "unprocessable",
            "the original message cannot be forwarded wrapped: its raw content was not kept",
        )
    try:
        if wrapped:
            raw = await c.blobs.get(original["raw_sha256"])
            attachments.check_wrapped("mode (wrapped): the original's file", raw)
            files[original["raw_sha256"]] = raw
            kept = Forwarded(
                message_id=original["id"], rfc_message_id=original["rfc_message_id"], mode="wrapped",
                original=ref_of(raw, "message/rfc822"),
            )  # fmt: skip
            text, html, carried = b.body_text, b.body_html, []
        else:
            kept = Forwarded(message_id=original["id"], rfc_message_id=original["rfc_message_id"])
            text, html = forward.inline_bodies(original, b.body_text, b.body_html)
            carried = (
                await attachments.carry(
                    c.blobs, attachments_of(original), callers, files, "include_original_attachments: the original's file"
                )
                if b.include_original_attachments
                else []
            )
    except BlobMissing:
        raise ApiError(
            502, "storage_unavailable", "the original's body or attachments could not be loaded"
        ) from None
    content = Content(
        subject=forward.subject(original["subject"], b.subject), text=text, html=html, cc=cc, bcc=r.bcc,
        reply_to=b.reply_to, attachments=[*callers, *carried], forwarded=kept, dialect=DIALECT_NAME,
        unsubscribe=await directory.wants_unsubscribe(c, mailbox["org_id"], None),
    )  # fmt: skip
    attachments.check_composed(mailbox["handle"], to, content, files)
    when = scheduling.when(b, reply=False)
    return await send(
        call, mailbox, lambda: NewSend(identity_id=mailbox["id"], messages=[to], content=content, **when.fields()),
        files,
    )  # fmt: skip


# --- flags and deletes ------------------------------------------------------------------------------


@mailbox_route(
    "PATCH", "/mailboxes/{email_address}/messages/{message_id}", scope="send", body=UpdateFlags,
    response=Message, errors=(400, 404), summary="Mark a message read or unread, starred or not",
)  # fmt: skip
async def update_flags(call: Call) -> web.Response:
    c = ctx(call)
    mailbox = await find_mailbox(call)
    row = await find_message(call, mailbox)
    b: UpdateFlags = call.body
    if b.is_read is None and b.is_starred is None:
        return json_model(message_item(row))
    await flags.change(c, mailbox, row["id"], call.request_id, is_read=b.is_read, is_starred=b.is_starred)
    changed = {k: v for k, v in (("is_read", b.is_read), ("is_starred", b.is_starred)) if v is not None}
    return json_model(message_item({**dict(row), **changed}))


@mailbox_route(
    "DELETE", "/mailboxes/{email_address}/messages/{message_id}", scope="send", status=204, errors=(404,),
    summary="Delete a message: gone from every dialect's reads; its audit trail stays",
)  # fmt: skip
async def delete_message(call: Call) -> web.Response:
    c = ctx(call)
    mailbox = await find_mailbox(call)
    row = await find_message(call, mailbox)
    await flags.delete(c, mailbox, [row["id"]], call.request_id)
    return web.Response(status=204)


# --- attachments --------------------------------------------------------------------------------------


@mailbox_route(
    "GET", "/mailboxes/{email_address}/messages/{message_id}/attachments/{filename}", scope="read",
    response=DownloadLink, errors=(400, 404),
    summary="A link to download one of the message's files, valid 15 minutes: 302 to it, or "
    "`{url, filename, expires_in}` with `redirect=false`",
)  # fmt: skip
async def attachment_link(call: Call) -> web.Response:
    c = ctx(call)
    row = await find_message(call, await find_mailbox(call))
    name = call.param("filename")
    found = next((a for a in attachments_of(row) if a.filename == name), None)
    if found is None:
        raise NotFound("attachment")
    url, _ = downloads.link(c, row["id"], found.sha256, name)
    link = DownloadLink(url=url, filename=name, expires_in=downloads.TTL_S)
    redirect = call.request.query.get("redirect", "true").lower()
    if redirect not in ("true", "false"):
        raise ApiError(400, "invalid_request", "redirect: must be true or false")
    if redirect == "false":
        return json_model(link)
    return json_model(link, 302, {"Location": url})


