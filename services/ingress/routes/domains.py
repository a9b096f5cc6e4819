"""An organization's domains (SPEC 5a): add one, publish the TXT record it names, verify it; the operator
grants one without DNS. Addresses are taken only at domains held: services/ingress/core/domains.py."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from schemas import ids
from schemas.api.common import iso
from schemas.api.domains import CreateDomain, DnsRecord, Domain, DomainCheck, DomainList
from services.ingress.context import ctx
from services.ingress.core import domains
from services.ingress.http import ApiError, Call, json_model, not_found, route


def domain_out(row: asyncpg.Record) -> Domain:
    return Domain(
        domain=row["domain"],
        status=row["status"],
        verifiedBy=row["verified_by"],
        record=DnsRecord(name=domains.RECORD_PREFIX + row["domain"], value=domains.VALUE_PREFIX + row["token"]),
        lastCheck=DomainCheck(at=iso(row["checked_at"]), result=row["last_check"]) if row["last_check"] else None,
        createdAt=iso(row["created_at"]),
        verifiedAt=iso(row["verified_at"]),
    )


@route("POST", "/v1/domains", scope="admin", tag="domains", body=CreateDomain, response=Domain, status=201,
       errors=(400,), summary="Add a domain: publish the TXT record it names, then verify it (200 if added before)")  # fmt: skip
async def add_domain(call: Call) -> web.Response:
    row, new = await domains.add(ctx(call), call.principal.org_id, call.body.domain)
    return json_model(domain_out(row), 201 if new else 200)


@route("GET", "/v1/domains", scope="read", tag="domains", response=DomainList,
       summary="The organization's domains, pending and verified")  # fmt: skip
async def list_domains(call: Call) -> web.Response:
    rows = await domains.list_domains(ctx(call), call.principal.org_id)
    return json_model(DomainList(data=[domain_out(r) for r in rows]))


@route("GET", "/v1/domains/{domain}", scope="read", tag="domains", response=Domain, errors=(404,),
       summary="One of the organization's domains")  # fmt: skip
async def get_domain(call: Call) -> web.Response:
    return json_model(domain_out(await domains.find(ctx(call), call.principal.org_id, call.param("domain"))))


@route("POST", "/v1/domains/{domain}/verify", scope="admin", tag="domains", response=Domain, errors=(404, 409),
       summary="Look the TXT record up: `verified`, or still `pending` with what the lookup found in `lastCheck`")  # fmt: skip
async def verify_domain(call: Call) -> web.Response:
    return json_model(domain_out(await domains.verify(ctx(call), call.principal.org_id, call.param("domain"))))


@route("DELETE", "/v1/domains/{domain}", scope="admin", tag="domains", status=204, errors=(404,),
       summary="Give a domain up: no new addresses there (those taken stay)")  # fmt: skip
async def remove_domain(call: Call) -> web.Response:
    await domains.remove(ctx(call), call.principal.org_id, call.param("domain"))
    return web.Response(status=204)


@route("POST", "/v1/organizations/{orgId}/domains", scope="admin", tag="domains", body=CreateDomain,
       response=Domain, status=201, errors=(400, 403, 404, 409),
       summary="Grant an organization a domain without DNS (operator keys only)")  # fmt: skip
async def grant_domain(call: Call) -> web.Response:
    if not call.principal.is_operator:
        raise ApiError(403, "forbidden", "only operator keys (organization `default`) can grant domains")
    org_id = ids.parse("org", call.param("orgId"))
    if org_id is None:
        raise not_found("Organization")
    return json_model(domain_out(await domains.grant(ctx(call), org_id, call.body.domain)), 201)
