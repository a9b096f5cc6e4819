"""The ingress: a thin aiohttp API that authenticates, validates, publishes requests and waits for decisions.

It never talks SMTP. Configuration and views live in PostgreSQL; everything that happens to a
message is an event on Kafka.
"""

from __future__ import annotations

import contextlib
import importlib

import structlog
from aiohttp import web

from schemas import dialects
from services.common import db
from services.common.broker import ensure_topics, make_broker
from services.common.domain.blobs import blob_store
from services.common.logging import configure_logging
from services.common.secrets import Secrets
from services.common.service import Periodic, run, stop_event
from services.common.settings import IngressSettings
from services.ingress.admission import Admission
from services.ingress.auth import authenticate, ensure_bootstrap_key
from services.ingress.cache import Cache
from services.ingress.context import CONTEXT, Context
from services.ingress.core import ratelimit
from services.ingress.decisions import DecisionWaiter
from services.ingress.feed import FeedWaiter
from services.ingress.http import MAX_BODY, add_routes, observe
from services.ingress.idempotency import sweep_expired

# Importing the route modules registers their routes: those of every dialect, by its name.
from services.ingress.routes import (  # noqa: F401
    admin,
    domains,
    downloads,
    drafts,
    events,
    messages,
    senders,
    suppressions,
    unsubscribe,
    webhooks,
)
from services.ingress.ui import app as dashboard
from services.ingress.ui import sessions as dashboard_sessions

for _dialect in dialects.REGISTERED:
    importlib.import_module(f"services.ingress.routes.{_dialect}")

log = structlog.get_logger("sendstream.ingress")
SETTINGS = web.AppKey("settings", IngressSettings)
ADMISSION = web.AppKey("admission", Admission)


async def _lifecycle(app: web.Application):
    settings = app[SETTINGS]
    pool = await db.create_pool(settings)
    await db.migrate(pool)
    await ensure_topics(settings)
    if settings.bootstrap_api_key:
        await ensure_bootstrap_key(pool, settings.bootstrap_api_key)
    broker = make_broker(settings, client_id="ingress")
    await broker.connect()
    waiter = DecisionWaiter(settings, pool)
    await waiter.start()
    cache = Cache(settings.database_url)
    await cache.start()
    blobs = blob_store(settings, pool)
    await blobs.start()
    feed = FeedWaiter(settings)
    await feed.start()
    app[CONTEXT] = Context(
        settings, pool, broker, waiter, cache, Secrets(settings.secret_keys), blobs, feed, app[ADMISSION]
    )
    sweeper = Periodic("expired keys and counts sweep", 600, lambda: _sweep_expired(pool))
    await sweeper.start()
    log.info("ingress ready", host=settings.http_host, port=settings.http_port)
    yield
    await sweeper.stop()
    await feed.stop()
    await blobs.stop()
    await cache.stop()
    await waiter.stop()
    await broker.stop()
    await pool.close()


async def _sweep_expired(pool) -> None:
    if removed := await sweep_expired(pool):
        log.info("expired idempotency keys removed", count=removed)
    await ratelimit.sweep(pool)
    await dashboard_sessions.sweep(pool)


def create_app(settings: IngressSettings) -> web.Application:
    app = web.Application(middlewares=[observe], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[MAX_BODY] = settings.max_body_bytes
    app.cleanup_ctx.append(_lifecycle)

    async def auth(request: web.Request):
        c = request.app[CONTEXT]
        return await authenticate(request, c.pool, c.cache)

    admission = app[ADMISSION] = Admission(settings.sends_in_flight_max, settings.shed_after_s)
    add_routes(app, auth, admission.admit)
    app.router.add_get("/ui", _to_dashboard)
    app.add_subapp("/ui", dashboard())
    return app


async def _to_dashboard(_: web.Request) -> web.Response:
    return web.Response(status=308, headers={"Location": "/ui/"})


async def serve(settings: IngressSettings) -> None:
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port, reuse_address=True)
    await site.start()
    stop = stop_event()
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()


def main() -> None:
    settings = IngressSettings()
    configure_logging(settings.log_level, settings.log_format, service="ingress")
    run(serve(settings), settings)
