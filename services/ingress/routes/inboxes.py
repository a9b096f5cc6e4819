"""The inboxes dialect (SPEC 3.2): inboxes over the core's identities. Messages, threads and search
come with the rest of the message core (issue 11)."""

from __future__ import annotations

import re
import secrets

from aiohttp import web

from schemas import ids
from schemas.api.common import FlatErrorBody
from schemas.api.inboxes import NOUNS, CreateInbox, Inbox, InboxList, inbox_out
from services.ingress.context import ctx
from services.ingress.core import directory
from services.ingress.http import ApiError, Call, json_model, route

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
