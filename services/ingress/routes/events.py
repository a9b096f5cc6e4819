"""The organization's events, in order, read from the archive: pages (`/v1/events`), a live stream
(`/v1/events/stream`, Server-Sent Events) for agents that cannot take webhooks, and a long poll for
the next message an inbox receives (`/v1/messages/wait`). See services/ingress/feed.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import asyncpg
from aiohttp import web

from schemas import ids
from schemas.api.common import iso
from schemas.api.events import EventPage, FeedEvent, WaitResult
from services.common.broker import is_transient
from services.ingress.auth import authenticate
from services.ingress.context import ctx
from services.ingress.core import directory
from services.ingress.feed import head, page
from services.ingress.http import ApiError, Call, json_model, query_limit, route

KEEP_ALIVE_S = 15.0  # a stream with nothing to say sends a comment this often
LONGEST_WAIT_S = 30
RECHECK_KEY_S = 1.0  # a stream or long poll ends this soon after its key is revoked
T = TypeVar("T")


class KeyRevoked(Exception):
    """The key a stream or long poll was opened with is no longer valid."""


async def while_key_valid(call: Call, work: Awaitable[T]) -> T:
    """`work`'s result, unless the caller's key is revoked first (checked every RECHECK_KEY_S: through the
    key cache, which every ingress process empties of a revoked key as soon as it hears of it, else the
    database): then KeyRevoked, and `work` is cancelled."""
    c = ctx(call)

    async def revoked() -> None:
        while True:
            await asyncio.sleep(RECHECK_KEY_S)
            try:
                await authenticate(call.request, c.pool, c.cache)
            except ApiError:
                return
            except Exception as exc:  # the database is away: the work finds out for itself
                if not is_transient(exc):
                    raise

    task, watch = asyncio.ensure_future(work), asyncio.ensure_future(revoked())
    try:
        done, _ = await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        task.cancel()
        watch.cancel()
    if task in done:
        return task.result()
    watch.result()
    raise KeyRevoked


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

    async def push(after: int) -> None:
        await response.write(b"retry: 2000\n\n")
        while True:
            rows = await c.feed.until(
                org_id, lambda after=after: page(c.pool, org_id, after, types, 100), KEEP_ALIVE_S
            )
            if not rows:
                await response.write(b": keep-alive\n\n")
                continue
            try:  # nothing more once the key is revoked (the key cache hears of it at once)
                await authenticate(call.request, c.pool, c.cache)
            except ApiError:
                raise KeyRevoked from None
            chunk = []
            for r in rows:
                data = feed_event(r).model_dump_json()
                chunk.append(f"id: {r['seq']}\nevent: {r['type']}\ndata: {data}\n\n")
            await response.write("".join(chunk).encode())
            after = rows[-1]["seq"]

    try:
        await while_key_valid(call, push(after))
    except KeyRevoked:  # the stream ends, saying why; a reconnection with the same key is 401
        await response.write(b'event: error\ndata: {"type": "unauthorized", "message": "the API key was revoked"}\n\n')
    except ConnectionResetError:  # the client left; it resumes with Last-Event-ID
        pass
    return response


@route(
    "GET", "/v1/messages/wait", scope="read", tag="events", response=WaitResult, errors=(400, 401, 404),
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

    try:
        row = await while_key_valid(call, c.feed.until(org_id, received, int(timeout)))
    except KeyRevoked:
        raise ApiError(401, "unauthorized", "the API key was revoked") from None
    return json_model(
        WaitResult(message=feed_event(row) if row else None, cursor=str(row["seq"] if row else after))
    )
