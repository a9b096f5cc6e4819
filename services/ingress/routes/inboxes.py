"""The inboxes dialect (SPEC 3.2): inboxes over the core's identities, and sending from them through
the core's send command. Replies, reading, threads and search come with the rest of the message core."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from aiohttp import web

from schemas import ids
from schemas.api.common import FlatErrorBody
from schemas.api.inboxes import (
    NOUNS,
    CreateInbox,
    Inbox,
    InboxList,
    Message,
    SendMessage,
    inbox_out,
    sent_message,
)
from schemas.commands import NewSend
from schemas.events import Content
from services.ingress.context import ctx
from services.ingress.core import directory
from services.ingress.core.send import submit
from services.ingress.http import ApiError, Call, json_model, route
from services.ingress.idempotency import IdSource, idempotent

DIALECT = {"tag": "inboxes", "nouns": NOUNS, "error_body": FlatErrorBody}
DAILY_CAP = 150  # SPEC 2's default for an identity


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
    email = b.email or generated_address(b.name, settings.inbox_default_domain)
    relay = b.smtp or settings.inbox_default_relay
    account = directory.NewAccount(
        email=email, smtp_host=relay.host, smtp_port=relay.port, smtp_tls=relay.tls,
        smtp_username=relay.username, smtp_password=relay.password,
    )  # fmt: skip
    identity, _ = await directory.create_identity(
        ctx(call), call.principal.org_id, email, daily_cap=DAILY_CAP, timezone="UTC", name=b.name,
        accounts=[account], correlation_id=call.request_id,
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


@route(
    "POST", "/v1/inboxes/{inboxId}/messages/send", scope="send",
    summary="Send one message to every address of to, cc and bcc (a new thread)", body=SendMessage,
    response=Message, errors=(400, 404, 409, 413, 503), idempotent=True, **DIALECT,
)  # fmt: skip
async def send_message(call: Call) -> web.Response:
    c = ctx(call)
    inbox = await find_inbox(call)
    b: SendMessage = call.body
    content = Content(subject=b.subject, text=b.text, html=b.html, cc=b.cc, bcc=b.bcc, labels=b.labels)
    cmd = NewSend(identity_id=inbox["id"], messages=[b.to], content=content)

    async def run(new: IdSource) -> web.Response:
        [m] = (await submit(c, cmd, inbox, new, call.request_id)).messages
        return json_model(sent_message(m, inbox, content, datetime.now(UTC)))

    return await idempotent(call, c.pool, c.settings.decision_timeout_s + 2, run)
