"""Organizations, API keys, and the operational routes (/healthz, /readyz, /metrics, /openapi.json)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from schemas import ids
from schemas.api.identities import (
    ApiKeyCreated,
    CreateApiKey,
    CreateOrganization,
    Organization,
    OrganizationCreated,
    UpdateOrganization,
)
from schemas.asyncapi import asyncapi_document
from services.common.service import metrics_response
from services.ingress.auth import create_organization, new_key, principal_cache_key, store_key
from services.ingress.context import ctx
from services.ingress.core import directory
from services.ingress.http import ApiError, Call, json_model, not_found, route
from services.ingress.llms import llms_txt
from services.ingress.openapi import openapi_document


@route(
    "POST",
    "/v1/organizations",
    scope="admin",
    tag="admin",
    summary="Create a tenant (operator keys only)",
    body=CreateOrganization,
    response=OrganizationCreated,
    status=201,
    errors=(400, 401, 403),
)
async def create_org(call: Call) -> web.Response:
    if not call.principal.is_operator:
        raise ApiError(
            403, "forbidden", "only operator keys (organization `default`) can create organizations"
        )
    org_id, key = await create_organization(ctx(call).pool, call.body.name)
    return json_model(OrganizationCreated(id=ids.render("org", org_id), name=call.body.name, apiKey=key), 201)


def organization_out(row) -> Organization:
    return Organization(
        id=ids.render("org", row["id"]), name=row["name"], unsubscribeByDefault=row["unsubscribe_default"]
    )


@route("GET", "/v1/organization", scope="read", tag="admin", response=Organization,
       summary="The caller's organization and its defaults")  # fmt: skip
async def get_organization(call: Call) -> web.Response:
    row = await ctx(call).pool.fetchrow("SELECT * FROM organizations WHERE id = $1", call.principal.org_id)
    return json_model(organization_out(row))


@route("PATCH", "/v1/organization", scope="admin", tag="admin", body=UpdateOrganization, response=Organization,
       errors=(400,), summary="Change the organization's defaults")  # fmt: skip
async def update_organization(call: Call) -> web.Response:
    row = await directory.set_unsubscribe_default(
        ctx(call), call.principal.org_id, call.body.unsubscribeByDefault
    )
    return json_model(organization_out(row))


@route(
    "POST",
    "/v1/api-keys",
    scope="admin",
    tag="admin",
    summary="Create an API key for the caller's organization",
    body=CreateApiKey,
    response=ApiKeyCreated,
    status=201,
    errors=(400, 401, 403),
)
async def create_key(call: Call) -> web.Response:
    key = new_key()
    scopes = sorted(set(call.body.scopes))
    key_id = await store_key(ctx(call).pool, call.principal.org_id, key, scopes)
    return json_model(ApiKeyCreated(id=ids.render("key", key_id), apiKey=key, scopes=scopes), 201)


@route(
    "DELETE",
    "/v1/api-keys/{keyId}",
    scope="admin",
    tag="admin",
    summary="Revoke an API key",
    status=204,
    errors=(401, 403, 404),
)
async def revoke_key(call: Call) -> web.Response:
    key_id = ids.parse("key", call.param("keyId"))
    hashed = key_id and await ctx(call).pool.fetchval(
        """UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
            WHERE id = $1 AND org_id = $2 RETURNING key_hash""",
        key_id,
        call.principal.org_id,
    )
    if not hashed:
        raise not_found("API key")
    await ctx(call).cache.invalidate(ctx(call).pool, principal_cache_key(hashed))
    return web.Response(status=204)


@route("GET", "/healthz", scope=None, tag="operations", summary="The process is up")
async def healthz(call: Call) -> web.Response:
    return web.json_response({"status": "ok"})


@route(
    "GET",
    "/readyz",
    scope=None,
    tag="operations",
    summary="The broker and the database are reachable",
    errors=(503,),
)
async def readyz(call: Call) -> web.Response:
    c = ctx(call)
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(c.pool.fetchval("SELECT 1"), 2)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    try:
        ok = await c.broker.ping(timeout=2)
        checks["broker"] = "ok" if ok else "unavailable"
    except Exception as exc:
        checks["broker"] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response(
        {"status": "ready" if ready else "not_ready", "checks": checks}, status=200 if ready else 503
    )


@route("GET", "/metrics", scope=None, tag="operations", summary="Prometheus metrics")
async def metrics(call: Call) -> web.Response:
    return metrics_response()


@route(
    "GET", "/asyncapi.json", scope=None, tag="operations", summary="The event log as an AsyncAPI 3.0 document"
)
async def asyncapi(call: Call) -> web.Response:
    return web.json_response(asyncapi_document(ctx(call).settings.kafka_topic_prefix))


@route("GET", "/openapi.json", scope=None, tag="operations", summary="This API as an OpenAPI 3.1 document")
async def openapi(call: Call) -> web.Response:
    return web.json_response(openapi_document())


@route("GET", "/llms.txt", scope=None, tag="operations", summary="This API described for language models")
async def llms(call: Call) -> web.Response:
    return web.Response(text=llms_txt(), content_type="text/markdown")
