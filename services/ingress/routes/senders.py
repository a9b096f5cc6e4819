"""An organization's sender rules for inbound mail (SPEC 2: allow and block lists of senders and
domains), and the mail they refused. The inbound SMTP server applies them at RCPT (the envelope sender)
and at DATA (the From header): mail/rules.py."""

from __future__ import annotations

from aiohttp import web

from schemas.api.common import iso
from schemas.api.senders import (
    AddSenderRule,
    RefusedMail,
    RefusedMailList,
    SenderRule,
    SenderRuleList,
    sender_pattern,
)
from services.ingress.context import ctx
from services.ingress.http import Call, json_model, not_found, query_limit, route


def rule_out(row) -> SenderRule:
    return SenderRule(pattern=row["pattern"], action=row["action"], createdAt=iso(row["created_at"]))


@route("GET", "/v1/sender-rules", scope="read", tag="sender rules", response=SenderRuleList,
       summary="The organization's sender rules for inbound mail")  # fmt: skip
async def list_rules(call: Call) -> web.Response:
    rows = await ctx(call).pool.fetch(
        "SELECT * FROM sender_rules WHERE org_id = $1 ORDER BY pattern", call.principal.org_id
    )
    return json_model(SenderRuleList(data=[rule_out(r) for r in rows]))


@route(
    "POST", "/v1/sender-rules", scope="admin", tag="sender rules", body=AddSenderRule, response=SenderRule,
    status=201, errors=(400,),
    summary="Block, or allow, an address or a domain (with its subdomains); once any allow rule exists, "
    "mail from senders no allow rule matches is refused. A rule for a pattern replaces the one before.",
)  # fmt: skip
async def add_rule(call: Call) -> web.Response:
    b: AddSenderRule = call.body
    row = await ctx(call).pool.fetchrow(
        """INSERT INTO sender_rules (org_id, pattern, action) VALUES ($1, $2, $3)
           ON CONFLICT (org_id, pattern) DO UPDATE SET action = EXCLUDED.action RETURNING *""",
        call.principal.org_id, b.pattern, b.action,
    )  # fmt: skip
    return json_model(rule_out(row), 201)


@route("DELETE", "/v1/sender-rules/{pattern}", scope="admin", tag="sender rules", status=204, errors=(404,),
       summary="Remove a sender rule")  # fmt: skip
async def remove_rule(call: Call) -> web.Response:
    try:
        pattern = sender_pattern(call.param("pattern"))
    except ValueError:
        raise not_found("Sender rule") from None
    removed = await ctx(call).pool.fetchval(
        "DELETE FROM sender_rules WHERE org_id = $1 AND pattern = $2 RETURNING pattern",
        call.principal.org_id, pattern,
    )  # fmt: skip
    if removed is None:
        raise not_found("Sender rule")
    return web.Response(status=204)


@route("GET", "/v1/refused-mail", scope="read", tag="sender rules", response=RefusedMailList, errors=(400,),
       summary="Mail the sender rules refused, newest first (`limit` 1-100, default 50)")  # fmt: skip
async def refused_mail(call: Call) -> web.Response:
    rows = await ctx(call).pool.fetch(
        "SELECT * FROM refused_mail WHERE org_id = $1 ORDER BY refused_at DESC, id DESC LIMIT $2",
        call.principal.org_id, query_limit(call, 50),
    )  # fmt: skip
    return json_model(
        RefusedMailList(
            data=[
                RefusedMail(sender=r["sender"], recipient=r["recipient"], stage=r["stage"], rule=r["rule"],
                            refusedAt=iso(r["refused_at"]))
                for r in rows
            ]
        )
    )  # fmt: skip
