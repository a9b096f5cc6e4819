"""How a consumer service process runs: `python -m services.<name>`.

Connects to PostgreSQL (applying migrations), creates topics, registers the service's consumers on
a broker, and runs until SIGTERM or SIGINT, then stops consuming and closes cleanly.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import asyncpg
import structlog
from aiohttp import web
from faststream.kafka import KafkaBroker
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.common import db
from services.common.broker import ensure_topics, make_broker
from services.common.logging import configure_logging
from services.common.settings import CommonSettings

Register = Callable[[KafkaBroker, CommonSettings, asyncpg.Pool], None]


def stop_event() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT: how every process of ours learns to stop cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def metrics_response() -> web.Response:
    """This process's Prometheus metrics, as every /metrics of ours answers them."""
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def serve_operations(host: str, port: int, broker: KafkaBroker) -> web.AppRunner:
    """/healthz (the process is up and connected to the broker) and Prometheus /metrics, for probes and scraping."""

    async def healthz(_: web.Request) -> web.Response:
        ok = await broker.ping(timeout=2)
        return web.json_response({"status": "ok" if ok else "broker unreachable"}, status=200 if ok else 503)

    async def metrics(_: web.Request) -> web.Response:
        return metrics_response()

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    return runner


async def serve(name: str, settings: CommonSettings, register: Register) -> None:
    log = structlog.get_logger(f"sendstream.{name}")
    pool = await db.create_pool(settings)
    await db.migrate(pool)
    await ensure_topics(settings)
    broker = make_broker(settings, client_id=name)
    register(broker, settings, pool)
    stop = stop_event()
    await broker.start()
    operations = (
        await serve_operations(settings.metrics_host, settings.metrics_port, broker)
        if settings.metrics_port
        else None
    )
    log.info("service started", metrics_port=settings.metrics_port)
    try:
        await stop.wait()
    finally:
        log.info("service stopping")
        if operations:
            await operations.cleanup()
        await broker.stop()
        await pool.close()


def main(name: str, settings: CommonSettings, register: Register) -> None:
    configure_logging(settings.log_level, settings.log_format, service=name)
    asyncio.run(serve(name, settings, register))
