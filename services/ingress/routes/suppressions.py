"""The organization's suppression list (SPEC 3.4): addresses decide refuses to mail (`suppressed`).

Entries are facts on the suppressions topic (SuppressionAdded / SuppressionRemoved, keyed by
organization, so in order); the projections keep the table these routes read and decide checks, and
these routes write their own facts through to it before answering (services/ingress/core/suppressions.py),
so a send asked for after the answer is decided with it. A bounce, a complaint or a one-click
unsubscribe adds one by itself, with its cause.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
from aiohttp import web

from schemas import ids
from schemas.api.common import iso
from schemas.api.suppressions import AddSuppression, Suppression, SuppressionList
from services.ingress import cursors
from services.ingress.context import ctx
from services.ingress.core import suppressions as suppressing
from services.ingress.http import Call, json_model, not_found, query_limit, route


def suppression_out(row: asyncpg.Record) -> Suppression:
    return Suppression(
        address=row["address"], reason=row["reason"],
        messageId=ids.render("message", row["message_id"]) if row["message_id"] else None,
        eventId=str(row["event_id"]), causeEventId=str(row["cause_id"]) if row["cause_id"] else None,
        createdAt=iso(row["created_at"]),
    )  # fmt: skip


async def find(call: Call, address: str) -> asyncpg.Record | None:
    return await suppressing.find(ctx(call), call.principal.org_id, address)


@route(
    "GET", "/v1/suppressions", scope="read", tag="suppressions", response=SuppressionList, errors=(400,),
    summary="Suppressed addresses, newest first (`cursor`, `limit` 1-100)",
)  # fmt: skip
async def list_suppressions(call: Call) -> web.Response:
    limit = query_limit(call, 50)
    cursor = call.request.query.get("cursor")
    at, address = cursors.decode(cursor, datetime, str) if cursor else (None, None)
    rows = await ctx(call).pool.fetch(
        """SELECT * FROM suppressions WHERE org_id = $1 AND active
              AND ($2::timestamptz IS NULL OR (created_at, address) < ($2, $3))
            ORDER BY created_at DESC, address DESC LIMIT $4""",
        call.principal.org_id, at, address, limit + 1,
    )  # fmt: skip
    more = len(rows) > limit
    rows = rows[:limit]
    return json_model(
        SuppressionList(
            data=[suppression_out(r) for r in rows],
            nextCursor=cursors.encode(rows[-1]["created_at"], rows[-1]["address"]) if more else None,
            hasMore=more,
        )
    )


@route(
    "GET", "/v1/suppressions/{address}", scope="read", tag="suppressions", response=Suppression, errors=(404,),
    summary="One suppressed address, with its cause",
)  # fmt: skip
async def get_suppression(call: Call) -> web.Response:
    row = await find(call, call.param("address"))
    if row is None:
        raise not_found("Suppression")
    return json_model(suppression_out(row))


@route(
    "POST", "/v1/suppressions", scope="admin", tag="suppressions", body=AddSuppression, response=Suppression,
    status=201, errors=(400,), answers={200: Suppression},
    summary="Suppress an address (200 with the entry if it is suppressed already: its first cause stays)",
)  # fmt: skip
async def add_suppression(call: Call) -> web.Response:
    b: AddSuppression = call.body
    if (row := await find(call, b.address)) is not None:
        return json_model(suppression_out(row))
    event = await suppressing.add(ctx(call), call.principal.org_id, b.address, b.reason, call.request_id)
    return json_model(
        Suppression(
            address=event.payload.address, reason=b.reason, messageId=None, eventId=str(event.event_id),
            causeEventId=None, createdAt=iso(event.occurred_at),
        ),
        201,
    )  # fmt: skip


@route(
    "DELETE", "/v1/suppressions/{address}", scope="admin", tag="suppressions", status=204, errors=(404,),
    summary="Mail an address again",
)  # fmt: skip
async def remove_suppression(call: Call) -> web.Response:
    row = await find(call, call.param("address"))
    if row is None:
        raise not_found("Suppression")
    await suppressing.remove(ctx(call), call.principal.org_id, row["address"], call.request_id)
    return web.Response(status=204)
