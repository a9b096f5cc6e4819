"""The identities dialect (SPEC 3.1): identities, their mailbox pools, send, and conversations."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import asyncpg
import structlog
from aiohttp import web

from schemas import ids
from schemas.api.common import iso
from schemas.api.drafts import Draft
from schemas.api.identities import (
    DIALECT,
    Conversation,
    ConversationList,
    CreateIdentity,
    CreateMailbox,
    Identity,
    IdentityList,
    ImapSettingsOut,
    Mailbox,
    MailboxList,
    MessageSearch,
    SendRequest,
    SendResponse,
    SmtpSettingsOut,
    SyncState,
    UpdateIdentity,
    UpdateMailbox,
    WarmupOut,
    WarmupSettings,
    conversation_out,
    found_message_out,
    send_response,
)
from schemas.commands import Command, NewSend, Reply
from schemas.events import Content
from schemas.warmup import Warmup, effective_daily_limit, warmup_of
from services.common.domain import views
from services.ingress import cursors
from services.ingress.context import ctx
from services.ingress.core import directory, egress, scheduling
from services.ingress.core.outcome import Outcome
from services.ingress.http import ApiError, Call, json_model, not_found, query_limit, route
from services.ingress.routes import drafts
from services.ingress.sending import send_one

log = structlog.get_logger("sendstream.ingress.identities")


def render_identity(row: asyncpg.Record) -> Identity:
    return Identity(
        id=ids.render("identity", row["id"]),
        handle=row["handle"],
        dailyCap=row["daily_cap"],
        timezone=row["timezone"],
        requireApproval=row["require_approval"],
        createdAt=iso(row["created_at"]),
        updatedAt=iso(row["updated_at"]),
    )


def render_mailbox(row: asyncpg.Record, handle: str) -> Mailbox:
    warmup = warmup_of(row)
    return Mailbox(
        id=ids.render("mailbox", row["id"]),
        identity=handle,
        email=row["email"],
        smtp=SmtpSettingsOut(
            host=row["smtp_host"], port=row["smtp_port"], tls=row["smtp_tls"], username=row["smtp_username"]
        ),
        hourlyLimit=row["hourly_limit"],
        dailyLimit=row["daily_limit"],
        warmup=warmup and WarmupOut(
            startPerDay=warmup.start_per_day, increasePerDay=warmup.increase_per_day, startedAt=iso(warmup.started_at)
        ),
        effectiveDailyLimit=effective_daily_limit(row["daily_limit"], warmup, datetime.now(UTC)),
        health=row["health"],
        imap=ImapSettingsOut(
            host=row["imap_host"], port=row["imap_port"], tls=row["imap_tls"], username=row["imap_username"]
        )
        if row["imap_host"]
        else None,
        sync=SyncState(state=row["sync_state"], error=row["sync_error"], lastSyncedAt=iso(row["synced_at"]))
        if row["imap_host"]
        else None,
        createdAt=iso(row["created_at"]),
        updatedAt=iso(row["updated_at"]),
    )


def ramp(settings: WarmupSettings | None) -> Warmup | None:
    """A request's warm-up ramp; 400 naming the field."""
    try:
        return settings and settings.warmup(datetime.now(UTC))
    except ValueError as exc:
        raise ApiError(400, "invalid_request", str(exc)) from None


async def find_identity(call: Call) -> asyncpg.Record:
    """The caller's identity named by the `handle` path parameter; 404 if absent or another org's."""
    return await directory.find_identity(ctx(call), call.principal.org_id, call.param("handle"))


async def find_mailbox(call: Call, identity: asyncpg.Record) -> asyncpg.Record:
    return await directory.find_account(ctx(call), identity, ids.parse("mailbox", call.param("accId")))


# --- identities ------------------------------------------------------------------------------------


@route(
    "POST",
    "/v1/identities",
    scope="admin",
    tag="identities",
    summary="Create an identity",
    body=CreateIdentity,
    response=Identity,
    status=201,
    errors=(400, 409),
)
async def create_identity(call: Call) -> web.Response:
    b: CreateIdentity = call.body
    row, _ = await directory.create_identity(
        ctx(call), call.principal.org_id, b.handle, daily_cap=b.dailyCap, timezone=b.timezone,
        correlation_id=call.request_id,
    )  # fmt: skip
    return json_model(render_identity(row), 201)


@route(
    "GET", "/v1/identities", scope="read", tag="identities", summary="List identities", response=IdentityList
)
async def list_identities(call: Call) -> web.Response:
    rows = await directory.list_identities(ctx(call), call.principal.org_id)
    return json_model(IdentityList(data=[render_identity(r) for r in rows]))


@route(
    "GET",
    "/v1/identities/{handle}",
    scope="read",
    tag="identities",
    summary="Get an identity",
    response=Identity,
    errors=(404,),
)
async def get_identity(call: Call) -> web.Response:
    return json_model(render_identity(await find_identity(call)))


@route(
    "PATCH",
    "/v1/identities/{handle}",
    scope="admin",
    tag="identities",
    summary="Change cap or time zone",
    body=UpdateIdentity,
    response=Identity,
    errors=(400, 404),
)
async def update_identity(call: Call) -> web.Response:
    identity = await find_identity(call)
    b: UpdateIdentity = call.body
    row = await directory.update_identity(
        ctx(call), identity, call.request_id, daily_cap=b.dailyCap, timezone=b.timezone,
        require_approval=b.requireApproval,
    )  # fmt: skip
    return json_model(render_identity(row))


@route(
    "DELETE",
    "/v1/identities/{handle}",
    scope="admin",
    tag="identities",
    summary="Delete an identity",
    status=204,
    errors=(404,),
)
async def delete_identity(call: Call) -> web.Response:
    await directory.delete_identity(ctx(call), await find_identity(call), call.request_id)
    return web.Response(status=204)


# --- mailboxes -------------------------------------------------------------------------------------


@route(
    "POST",
    "/v1/identities/{handle}/mailboxes",
    scope="admin",
    tag="identities",
    summary="Add a mailbox to the identity's pool",
    body=CreateMailbox,
    response=Mailbox,
    status=201,
    errors=(400, 404, 409),
)
async def add_mailbox(call: Call) -> web.Response:
    identity = await find_identity(call)
    b: CreateMailbox = call.body
    await egress.check_account(ctx(call), b.smtp, b.imap)
    account = directory.NewAccount.through(
        b.email, b.smtp, hourly_limit=b.hourlyLimit, daily_limit=b.dailyLimit, imap=b.imap,
        warmup=ramp(b.warmup),
    )  # fmt: skip
    row = await directory.add_account(ctx(call), identity, account, call.request_id)
    return json_model(render_mailbox(row, identity["handle"]), 201)


@route(
    "GET",
    "/v1/identities/{handle}/mailboxes",
    scope="read",
    tag="identities",
    summary="List the identity's mailboxes",
    response=MailboxList,
    errors=(404,),
)
async def list_mailboxes(call: Call) -> web.Response:
    identity = await find_identity(call)
    rows = (await directory.accounts_of(ctx(call), [identity["id"]]))[identity["id"]]
    return json_model(MailboxList(data=[render_mailbox(r, identity["handle"]) for r in rows]))


@route(
    "GET", "/v1/identities/{handle}/mailboxes/{accId}", scope="read", tag="identities",
    summary="A mailbox of the pool, with its IMAP sync's state", response=Mailbox, errors=(404,),
)  # fmt: skip
async def get_mailbox(call: Call) -> web.Response:
    identity = await find_identity(call)
    return json_model(render_mailbox(await find_mailbox(call, identity), identity["handle"]))


@route(
    "PATCH",
    "/v1/identities/{handle}/mailboxes/{accId}",
    scope="admin",
    tag="identities",
    summary="Change a mailbox's health, limits, SMTP settings or IMAP account",
    body=UpdateMailbox,
    response=Mailbox,
    errors=(400, 404),
)
async def update_mailbox(call: Call) -> web.Response:
    identity = await find_identity(call)
    before = await find_mailbox(call, identity)
    b: UpdateMailbox = call.body
    smtp = b.smtp.model_dump(exclude_unset=True) if b.smtp else {}
    fields = b.model_dump(exclude_unset=True, exclude={"smtp", "imap"})
    if "warmup" in fields:
        fields["warmup"] = ramp(b.warmup)
    host, port = smtp.get("host") or before["smtp_host"], smtp.get("port") or before["smtp_port"]
    # Credentials never follow a change of server: a new host or port without a new password clears them.
    moved = (host.lower(), port) != (before["smtp_host"].lower(), before["smtp_port"])
    if moved and "password" not in smtp:
        smtp.setdefault("username", None)
        smtp["password"] = None
    if smtp:
        username = smtp["username"] if "username" in smtp else before["smtp_username"]
        password = smtp["password"] if "password" in smtp else before["smtp_password"]
        await egress.check_server(
            ctx(call),
            "smtp",
            host,
            port,
            smtp.get("tls") or before["smtp_tls"],
            password=bool(username or password),
        )
    if b.imap is not None:
        await egress.check_account(ctx(call), imap=b.imap)
    changes = directory.AccountChanges(fields, smtp, b.imap, "imap" in b.model_fields_set)
    row = await directory.update_account(ctx(call), identity, before, changes, call.request_id)
    return json_model(render_mailbox(row, identity["handle"]))


@route(
    "DELETE",
    "/v1/identities/{handle}/mailboxes/{accId}",
    scope="admin",
    tag="identities",
    summary="Remove a mailbox from the pool",
    status=204,
    errors=(404,),
)
async def remove_mailbox(call: Call) -> web.Response:
    identity = await find_identity(call)
    mailbox = await find_mailbox(call, identity)
    await directory.remove_account(ctx(call), identity, mailbox, call.request_id)
    return web.Response(status=204)


# --- send ------------------------------------------------------------------------------------------


@route(
    "POST",
    "/v1/identities/{handle}/send",
    scope="send",
    tag="identities",
    summary="Send a new conversation (to, subject, body) or reply (convId, body)",
    body=SendRequest,
    response=SendResponse,
    status=202,
    errors=(400, 404, 409, 413, 429, 503),
    idempotent=True,
    answers={429: SendResponse},  # every recipient rejected: the same body as 202
)
async def send(call: Call) -> web.Response:
    identity = await find_identity(call)
    cmd = await command_of(call, identity, call.body)

    async def answer(_: Command, outcome: Outcome, __: list) -> web.Response:
        return json_model(*send_response(outcome, identity["handle"]))

    return await send_one(call, identity, DIALECT.name, lambda: cmd, answer, files=None)


@route(
    "GET", "/v1/identities/{handle}/conversations", scope="read", tag="identities", response=ConversationList,
    errors=(400, 404),
    summary="The identity's conversations with their messages, most recently active first (`cursor`, `limit` 1-100, "
    "default 20)",
)  # fmt: skip
async def list_conversations(call: Call) -> web.Response:
    return await conversations_page(call, await find_identity(call))


@route(
    "GET", "/v1/conversations", scope="read", tag="identities", response=ConversationList, errors=(400, 404),
    summary="The organization's conversations with their messages (`identity`: one identity's, by handle), most "
    "recently active first (`cursor`, `limit` 1-100, default 20)",
)  # fmt: skip
async def list_all_conversations(call: Call) -> web.Response:
    identity = await directory.identity_named(ctx(call), call.principal.org_id, call.request.query.get("identity"))
    return await conversations_page(call, identity)


async def conversations_page(call: Call, identity: asyncpg.Record | None) -> web.Response:
    cursor = call.request.query.get("cursor")
    after = cursors.decode(cursor, datetime, UUID) if cursor else None
    found, more = await views.thread_page(
        ctx(call).pool, call.principal.org_id, identity and identity["id"], views.Filter(), after=after,
        limit=query_limit(call, 20),
    )  # fmt: skip
    last = found[-1][0] if found else None
    return json_model(
        ConversationList(
            data=[conversation_out(conv, rows) for conv, rows in found],
            nextCursor=cursors.encode(last["updated_at"], last["id"]) if more and last else None, hasMore=more,
        )
    )  # fmt: skip


@route(
    "GET", "/v1/identities/{handle}/messages", scope="read", tag="identities", response=MessageSearch,
    errors=(400, 404),
    summary="The identity's messages matching `q` (every word; the last one as a prefix), best first (`limit` 1-100)",
)  # fmt: skip
async def search_messages(call: Call) -> web.Response:
    return await found_messages(call, await find_identity(call))


@route(
    "GET", "/v1/messages", scope="read", tag="identities", response=MessageSearch, errors=(400, 404),
    summary="The organization's messages (`identity`: one identity's, by handle) matching `q` (every word; the "
    "last one as a prefix), best first (`limit` 1-100)",
)  # fmt: skip
async def search_all_messages(call: Call) -> web.Response:
    identity = await directory.identity_named(ctx(call), call.principal.org_id, call.request.query.get("identity"))
    return await found_messages(call, identity)


async def found_messages(call: Call, identity: asyncpg.Record | None) -> web.Response:
    q = call.request.query.get("q", "").strip()
    if not q:
        raise ApiError(400, "invalid_request", "q: is required (the words to find)")
    rows = await views.inbox_messages(
        ctx(call).pool, call.principal.org_id, identity and identity["id"], q, query_limit(call, 20)
    )
    return json_model(MessageSearch(data=[found_message_out(r) for r in rows]))


@route(
    "POST", "/v1/identities/{handle}/drafts", scope="send", tag="drafts",
    summary="Make a draft of a send (the send's body, sendAt included): nothing goes out until it is approved",
    body=SendRequest, response=Draft, status=201, errors=(400, 404, 409, 413, 429, 503), idempotent=True,
)  # fmt: skip
async def create_draft(call: Call) -> web.Response:
    identity = await find_identity(call)
    cmd = (await command_of(call, identity, call.body)).model_copy(update={"draft": True})

    async def answer(_: Command, outcome: Outcome, __: list) -> web.Response:
        return await drafts.shown(call, outcome.messages[0].draft_id, status=201)

    return await send_one(call, identity, DIALECT.name, lambda: cmd, answer, files=None)


async def command_of(call: Call, identity: asyncpg.Record, b: SendRequest) -> Command:
    """What a send request asks of the core: a new conversation per recipient, or a reply."""
    c = ctx(call)
    when = scheduling.when(b, reply=b.convId is not None)
    unsubscribe = await directory.wants_unsubscribe(c, identity["org_id"], b.unsubscribe)
    cmd: Command
    if b.convId is not None:
        thread = await directory.find_thread(c, identity, ids.parse("conversation", b.convId))
        cmd = Reply(
            identity_id=identity["id"], conv_id=thread["conv_id"], to=thread["counterpart"],
            content=Content(text=b.text, html=b.html, unsubscribe=unsubscribe), **when.fields(),
        )  # fmt: skip
    else:
        content = Content(
            subject=b.subject or "",
            text=b.text,
            html=b.html,
            in_reply_to=b.inReplyTo,
            references=b.references or [],
            unsubscribe=unsubscribe,
        )
        cmd = NewSend(
            identity_id=identity["id"], messages=[[to] for to in b.recipients()], content=content, **when.fields()
        )
    return cmd


# --- conversations ---------------------------------------------------------------------------------


@route(
    "GET",
    "/v1/conversations/{convId}",
    scope="read",
    tag="identities",
    summary="A conversation with its messages in order",
    response=Conversation,
    errors=(404,),
)
async def get_conversation(call: Call) -> web.Response:
    conv_id = ids.parse("conversation", call.param("convId"))
    found = conv_id and await views.conversation(ctx(call).pool, call.principal.org_id, conv_id)
    if not found:
        raise not_found("Conversation")
    return json_model(conversation_out(*found))
