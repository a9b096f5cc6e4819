"""Webhook endpoints and their deliveries (SPEC 3.4). The webhooks service does the delivering."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg
from aiohttp import web

from schemas import ids
from schemas.api.common import iso
from schemas.api.webhooks import (
    CreateWebhook,
    Delivery,
    DeliveryAttempt,
    DeliveryList,
    SecretRotated,
    UpdateWebhook,
    Webhook,
    WebhookCreated,
    WebhookList,
)
from schemas.webhooks import TEST_TYPE, body
from services.common.domain.webhooks import queue, signing
from services.common.egress import Egress, UnsafeDestination
from services.ingress import cursors
from services.ingress.context import ctx
from services.ingress.http import ApiError, Call, json_model, not_found, query_limit, route


def render_webhook(row: asyncpg.Record) -> dict:
    return {
        "id": ids.render("webhook", row["id"]),
        "url": row["url"],
        "events": row["events"],
        "description": row["description"],
        "enabled": row["enabled"],
        "disabledReason": row["disabled_reason"],
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
    }


async def check_destination(call: Call, url: str) -> None:
    try:
        await Egress.of(ctx(call).settings).check_url(url)
    except UnsafeDestination as exc:
        raise ApiError(400, "invalid_request", f"url: {exc}") from None


async def find_webhook(call: Call, *, enabled: bool = False) -> asyncpg.Record:
    """The caller's endpoint named by the `id` path parameter (404 if absent or another org's);
    with `enabled`, 409 unless it is enabled."""
    webhook_id = ids.parse("webhook", call.param("id"))
    row = webhook_id and await ctx(call).pool.fetchrow(
        "SELECT * FROM webhook_endpoints WHERE id = $1 AND org_id = $2", webhook_id, call.principal.org_id
    )
    if not row:
        raise not_found("Webhook")
    if enabled and not row["enabled"]:
        raise ApiError(409, "conflict", "the webhook is disabled; enable it with PATCH first")
    return row


@route(
    "POST",
    "/v1/webhooks",
    scope="admin",
    tag="webhooks",
    summary="Register a webhook endpoint (answers with its signing secret, once)",
    body=CreateWebhook,
    response=WebhookCreated,
    status=201,
    errors=(400,),
)
async def create_webhook(call: Call) -> web.Response:
    b: CreateWebhook = call.body
    await check_destination(call, b.url)
    secret = signing.new_secret()
    row = await ctx(call).pool.fetchrow(
        """INSERT INTO webhook_endpoints (id, org_id, url, events, description, secret)
           VALUES ($1, $2, $3, $4, $5, $6) RETURNING *""",
        ids.new_id(),
        call.principal.org_id,
        b.url,
        b.events,
        b.description,
        ctx(call).secrets.seal(secret),
    )
    return json_model(WebhookCreated(**render_webhook(row), secret=secret), 201)


@route(
    "GET",
    "/v1/webhooks",
    scope="read",
    tag="webhooks",
    summary="List webhook endpoints",
    response=WebhookList,
)
async def list_webhooks(call: Call) -> web.Response:
    rows = await ctx(call).pool.fetch(
        "SELECT * FROM webhook_endpoints WHERE org_id = $1 ORDER BY created_at, id", call.principal.org_id
    )
    return json_model(WebhookList(data=[Webhook(**render_webhook(r)) for r in rows]))


@route(
    "GET",
    "/v1/webhooks/{id}",
    scope="read",
    tag="webhooks",
    summary="A webhook endpoint",
    response=Webhook,
    errors=(404,),
)
async def get_webhook(call: Call) -> web.Response:
    return json_model(Webhook(**render_webhook(await find_webhook(call))))


@route(
    "PATCH",
    "/v1/webhooks/{id}",
    scope="admin",
    tag="webhooks",
    summary="Change a webhook endpoint's URL, events or description, or enable it again",
    body=UpdateWebhook,
    response=Webhook,
    errors=(400, 404),
)
async def update_webhook(call: Call) -> web.Response:
    b: UpdateWebhook = call.body
    row = await find_webhook(call)
    if b.url is not None:
        await check_destination(call, b.url)
    row = await ctx(call).pool.fetchrow(
        """UPDATE webhook_endpoints
              SET url = coalesce($2, url), events = coalesce($3, events), description = coalesce($4, description),
                  enabled = coalesce($5, enabled),
                  disabled_reason = CASE WHEN $5 THEN NULL WHEN $5 = false THEN 'disabled by the API'
                                         ELSE disabled_reason END,
                  failing_since = CASE WHEN $5 THEN NULL ELSE failing_since END,
                  updated_at = now()
            WHERE id = $1 RETURNING *""",
        row["id"],
        b.url,
        b.events,
        b.description,
        b.enabled,
    )
    return json_model(Webhook(**render_webhook(row)))


@route(
    "DELETE",
    "/v1/webhooks/{id}",
    scope="admin",
    tag="webhooks",
    summary="Remove a webhook endpoint and its pending deliveries",
    status=204,
    errors=(404,),
)
async def delete_webhook(call: Call) -> web.Response:
    row = await find_webhook(call)
    await ctx(call).pool.execute("DELETE FROM webhook_endpoints WHERE id = $1", row["id"])
    return web.Response(status=204)


@route(
    "POST",
    "/v1/webhooks/{id}/rotate-secret",
    scope="admin",
    tag="webhooks",
    summary="Replace the signing secret; the previous one keeps signing for a grace period",
    response=SecretRotated,
    errors=(404,),
)
async def rotate_secret(call: Call) -> web.Response:
    row = await find_webhook(call)
    secret = signing.new_secret()
    expires = datetime.now(UTC) + timedelta(seconds=ctx(call).settings.webhook_secret_grace_s)
    await ctx(call).pool.execute(
        """UPDATE webhook_endpoints SET previous_secret = secret, previous_expires_at = $2, secret = $3,
                  updated_at = now() WHERE id = $1""",
        row["id"],
        expires,
        ctx(call).secrets.seal(secret),
    )
    return json_model(SecretRotated(secret=secret, previousSecretExpiresAt=iso(expires)))


# --- deliveries ------------------------------------------------------------------------------------


def render_delivery(row: asyncpg.Record, attempts: list[asyncpg.Record]) -> Delivery:
    return Delivery(
        id=ids.render("delivery", row["id"]),
        webhookId=ids.render("webhook", row["endpoint_id"]),
        type=row["event_type"],
        messageId=ids.render("message", row["message_id"]) if row["message_id"] else None,
        state=row["state"],
        attemptCount=row["attempts"],
        nextAttemptAt=iso(row["next_attempt_at"]) if row["state"] == "pending" else None,
        lastStatusCode=row["last_status_code"],
        createdAt=iso(row["created_at"]),
        deliveredAt=iso(row["delivered_at"]),
        payload=json.loads(row["body"]),
        attempts=[
            DeliveryAttempt(
                attempt=a["attempt"],
                startedAt=iso(a["started_at"]),
                durationMs=a["duration_ms"],
                statusCode=a["status_code"],
                error=a["error"],
                response=a["response"],
            )
            for a in attempts
        ],
    )


async def attempts_of(pool: asyncpg.Pool, delivery_ids: list) -> dict:
    out: dict = {d: [] for d in delivery_ids}
    for a in await pool.fetch(
        "SELECT * FROM webhook_attempts WHERE delivery_id = ANY($1::uuid[]) ORDER BY delivery_id, attempt",
        delivery_ids,
    ):
        out[a["delivery_id"]].append(a)
    return out


@route(
    "GET",
    "/v1/webhooks/{id}/deliveries",
    scope="read",
    tag="webhooks",
    summary="Deliveries to an endpoint, newest first, each with its attempts (`messageId`: those of one message; "
    "`cursor`, `limit` 1-100)",
    response=DeliveryList,
    errors=(400, 404),
)
async def list_deliveries(call: Call) -> web.Response:
    row = await find_webhook(call)
    q = call.request.query
    limit = query_limit(call, 50)
    before = cursors.decode(q["cursor"], int)[0] if q.get("cursor") else None
    message_id = ids.parse("message", q["messageId"]) if q.get("messageId") else None
    if q.get("messageId") and message_id is None:
        raise ApiError(400, "invalid_request", "messageId: is not a message id")
    pool = ctx(call).pool
    rows = await pool.fetch(
        """SELECT * FROM webhook_deliveries WHERE endpoint_id = $1 AND ($2::bigint IS NULL OR seq < $2)
              AND ($3::uuid IS NULL OR message_id = $3)
            ORDER BY seq DESC LIMIT $4""",
        row["id"],
        before,
        message_id,
        limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    attempts = await attempts_of(pool, [r["id"] for r in rows])
    return json_model(
        DeliveryList(
            data=[render_delivery(r, attempts[r["id"]]) for r in rows],
            nextCursor=cursors.encode(rows[-1]["seq"]) if more else None,
            hasMore=more,
        )
    )


@route(
    "POST",
    "/v1/webhooks/{id}/deliveries/{deliveryId}/retry",
    scope="admin",
    tag="webhooks",
    summary="Send a delivery again now (same webhook-id), whatever its state",
    response=Delivery,
    status=202,
    errors=(404, 409),
)
async def retry_delivery(call: Call) -> web.Response:
    endpoint = await find_webhook(call, enabled=True)
    wanted = ids.parse("delivery", call.param("deliveryId"))
    pool = ctx(call).pool
    row = wanted and await pool.fetchrow(
        """UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = now()
            WHERE id = $1 AND endpoint_id = $2 RETURNING *""",
        wanted,
        endpoint["id"],
    )
    if not row:
        raise not_found("Delivery")
    await queue.wake(pool)
    return json_model(render_delivery(row, (await attempts_of(pool, [row["id"]]))[row["id"]]), 202)


@route(
    "POST",
    "/v1/webhooks/{id}/test",
    scope="admin",
    tag="webhooks",
    summary="Queue a `webhook.test` delivery to the endpoint",
    response=Delivery,
    status=202,
    errors=(404, 409),
)
async def test_webhook(call: Call) -> web.Response:
    endpoint = await find_webhook(call, enabled=True)
    event_id = ids.new_id()
    data = {"webhookId": ids.render("webhook", endpoint["id"]), "requestId": call.request_id}
    new = queue.delivery_id(endpoint["id"], event_id)
    async with ctx(call).pool.acquire() as conn, conn.transaction():
        await queue.insert(
            conn,
            [(new, endpoint["id"], endpoint["org_id"], event_id, TEST_TYPE, None,
              body(TEST_TYPE, datetime.now(UTC), data))],
        )  # fmt: skip
        row = await conn.fetchrow("SELECT * FROM webhook_deliveries WHERE id = $1", new)
    return json_model(render_delivery(row, []), 202)
