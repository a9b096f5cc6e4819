"""One send through any dialect's route: under the request's Idempotency-Key, within the hourly budgets
of the route's dialect and of the account's own (counted inside the key: a replay spends none), carried
out by the core (services/ingress/core/send.py), answered as the dialect answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from schemas.commands import Command
from schemas.events import Origin
from services.ingress.context import ctx
from services.ingress.core import ratelimit
from services.ingress.core.outcome import Outcome
from services.ingress.core.ratelimit import Window
from services.ingress.core.send import submit
from services.ingress.http import Call
from services.ingress.idempotency import IdSource, fingerprint, idempotent

# The dialect's answer, from the command carried out, its outcome and the windows of the budgets it spent
# (for X-RateLimit-*).
Answer = Callable[[Command, Outcome, list[Window]], Awaitable[web.Response]]


def origin_of(call: Call) -> Origin:
    """Who asked, for the audit trail: the key and a fingerprint of the request as sent."""
    return Origin(api_key_id=call.principal.key_id, request_sha256=fingerprint(call.request, call.raw).hex())


async def send_one(
    call: Call,
    account,
    dialect: str,
    command: Callable[[], Command],
    answer: Answer,
    files: dict[str, bytes] | None = None,
) -> web.Response:
    """Carry out `command()` for `account` (an identity, inbox or mailbox row) as asked through the
    routes of `dialect`, once per Idempotency-Key, and answer what `answer` makes of its outcome."""
    c = ctx(call)

    async def run(new: IdSource) -> web.Response:
        windows = await ratelimit.admit(
            c.pool, account["org_id"], ratelimit.send_budgets(c.settings, account, dialect)
        )
        cmd = command()
        outcome = await submit(c, cmd, account, new, files, correlation_id=call.request_id, origin=origin_of(call))
        return await answer(cmd, outcome, windows)

    return await idempotent(call, c.pool, c.settings.send_answered_within_s, run)
