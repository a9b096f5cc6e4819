"""The organization's events, in order, read from the archive: pages (`/v1/events`), a live stream
(`/v1/events/stream`, Server-Sent Events) for agents that cannot take webhooks, and a long poll for
the next message an inbox receives (`/v1/messages/wait`). See services/ingress/feed.py."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from schemas import ids
from schemas.api.common import iso
from schemas.api.events import EventPage, FeedEvent, WaitResult
from services.ingress.context import ctx
from services.ingress.core import directory
from services.ingress.feed import head, page
from services.ingress.http import ApiError, Call, json_model, query_limit, route

KEEP_ALIVE_S = 15.0  # a stream with nothing to say sends a comment this often
LONGEST_WAIT_S = 30


def feed_event(row: asyncpg.Record) -> FeedEvent:
    return FeedEvent(
        cursor=str(row["seq"]), id=str(row["event_id"]), type=row["type"],
        occurredAt=iso(row["occurred_at"]), event=row["event"],
    )  # fmt: skip


def cursor_param(name: str, value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 18:
        raise ApiError(400, "invalid_request", f"{name}: is not a cursor this API returned")
    return int(value)


def types_param(call: Call) -> list[str] | None:
    text = call.request.query.get("types")
    if not text:
        return None
    types = [t.strip() for t in text.split(",") if t.strip()]
    if len(types) > 50 or any(len(t) > 64 for t in types):
        raise ApiError(400, "invalid_request", "types: at most 50 event types, comma-separated")
    return types


@route(
    "GET", "/v1/events", scope="read", tag="events", response=EventPage, errors=(400,),
    summary="The organization's events in order, a page after `after` (`types` comma-separated, `limit` 1-100)",
)  # fmt: skip
async def list_events(call: Call) -> web.Response:
    after = cursor_param("after", call.request.query.get("after")) or 0
    limit = query_limit(call, 50)
    rows = await page(ctx(call).pool, call.principal.org_id, after, types_param(call), limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return json_model(
        EventPage(
            data=[feed_event(r) for r in rows],
            nextCursor=str(rows[-1]["seq"]) if rows else str(after),
            hasMore=more,
        )
    )


@route(
    "GET", "/v1/events/stream", scope="read", tag="events",
    summary="The organization's events as they happen (Server-Sent Events; resumes after `Last-Event-ID` "
    "or `after`, else starts now; `types` comma-separated)",
)  # fmt: skip
async def stream_events(call: Call) -> web.StreamResponse:
    c, org_id = ctx(call), call.principal.org_id
    after = cursor_param("Last-Event-ID", call.request.headers.get("Last-Event-ID"))
    if after is None:
        after = cursor_param("after", call.request.query.get("after"))
    if after is None:
        after = await head(c.pool, org_id)
    types = types_param(call)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await response.prepare(call.request)
    try:
        await response.write(b"retry: 2000\n\n")
        while True:
            rows = await c.feed.until(
                org_id, lambda after=after: page(c.pool, org_id, after, types, 100), KEEP_ALIVE_S
            )
            if not rows:
                await response.write(b": keep-alive\n\n")
                continue
            chunk = []
            for r in rows:
                data = feed_event(r).model_dump_json()
                chunk.append(f"id: {r['seq']}\nevent: {r['type']}\ndata: {data}\n\n")
            await response.write("".join(chunk).encode())
            after = rows[-1]["seq"]
    except ConnectionResetError:  # the client left; it resumes with Last-Event-ID
        return response


@route(
    "GET", "/v1/messages/wait", scope="read", tag="events", response=WaitResult, errors=(400, 404),
    summary="Wait (long poll, `timeout` up to 30 s) for the next message `inbox` (an inbox id or an identity "
    "handle) receives after `after` (a cursor; by default, now)",
)  # fmt: skip
async def wait_for_message(call: Call) -> web.Response:
    c, org_id, q = ctx(call), call.principal.org_id, call.request.query
    inbox = q.get("inbox")
    if not inbox:
        raise ApiError(400, "invalid_request", "inbox: is required (an inbox id or an identity handle)")
    identity_id = ids.parse("inbox", inbox)
    identity = (
        await directory.find_identity_by_id(c, org_id, identity_id)
        if identity_id
        else await directory.find_identity(c, org_id, inbox)
    )
    timeout = q.get("timeout", "25")
    if not timeout.isdigit() or int(timeout) > LONGEST_WAIT_S:
        raise ApiError(
            400, "invalid_request", f"timeout: must be a whole number of seconds from 0 to {LONGEST_WAIT_S}"
        )
    after = cursor_param("after", q.get("after"))
    if after is None:
        after = await head(c.pool, org_id)

    async def received() -> asyncpg.Record | None:
        return await c.pool.fetchrow(
            """SELECT seq, event_id, type, occurred_at, event FROM event_archive
                WHERE org_id = $1 AND seq > $2 AND type = 'MessageReceived' AND event->>'identity_id' = $3
                ORDER BY seq LIMIT 1""",
            org_id, after, str(identity["id"]),
        )  # fmt: skip

    row = await c.feed.until(org_id, received, int(timeout))
    return json_model(
        WaitResult(message=feed_event(row) if row else None, cursor=str(row["seq"] if row else after))
    )
