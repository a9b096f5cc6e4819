"""One-click unsubscribe (RFC 8058): the public end of a send's List-Unsubscribe link. No API key: the
token is the authority (services/common/domain/unsubscribe.py): it names the message and the recipient it was
made for. POST suppresses that recipient, and nobody else, at once and is safe to repeat; GET (a person
following the link) answers a page whose button POSTs."""

from __future__ import annotations

import html

from aiohttp import web
from pydantic import BaseModel

from services.common.domain import suppressions, unsubscribe
from services.ingress.context import ctx
from services.ingress.http import Call, json_model, not_found, route


class Unsubscribed(BaseModel):
    unsubscribed: bool


async def suppression(call: Call):
    key = unsubscribe.key_of(ctx(call).settings)
    event = key and await unsubscribe.follow(ctx(call).pool, key, call.param("token"))
    if not event:
        raise not_found("Unsubscribe link")
    return event


@route(
    "POST", "/u/{token}", scope=None, tag="unsubscribe", response=Unsubscribed, errors=(404,),
    summary="One-click unsubscribe (RFC 8058): suppresses the recipient the link was sent to, and only them",
)  # fmt: skip
async def unsubscribe_now(call: Call) -> web.Response:
    events = [await suppression(call)]
    await ctx(call).publish(events)
    await suppressions.write_through(ctx(call).pool, events)  # read-your-writes: decide reads this view
    return json_model(Unsubscribed(unsubscribed=True))


@route(
    "GET", "/u/{token}", scope=None, tag="unsubscribe", errors=(404,),
    summary="The unsubscribe page a person following the link sees (its button POSTs)",
)  # fmt: skip
async def unsubscribe_page(call: Call) -> web.Response:
    await suppression(call)  # a link that is not ours is 404 here too
    action = html.escape(call.request.path)
    page = f"""<!doctype html><meta charset="utf-8"><title>Unsubscribe</title>
<form method="post" action="{action}"><input type="hidden" name="List-Unsubscribe" value="One-Click">
<p>Stop receiving these emails?</p><button type="submit">Unsubscribe</button></form>"""
    return web.Response(text=page, content_type="text/html")
