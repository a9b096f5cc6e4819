"""How a consumer service process runs: `python -m services.<name>`.

Connects to PostgreSQL (applying migrations), creates topics, registers the service's consumers on
a broker, and runs until SIGTERM or SIGINT, then stops consuming and closes cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol, runtime_checkable

import asyncpg
import structlog
from aiohttp import web
from faststream.kafka import KafkaBroker
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.common import db
from services.common.broker import (
    anchor_groups,
    commit_handled,
    consumers_joined,
    ensure_topics,
    make_broker,
)
from services.common.logging import configure_logging
from services.common.progress import stuck
from services.common.settings import CommonSettings


@runtime_checkable
class Background(Protocol):
    """Work a service runs beside its consumers (e.g. the webhook deliverer), started after them."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


async def cancel(task: asyncio.Task | None) -> None:
    """Cancel `task` (if there is one) and wait until it has ended."""
    if task:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Periodic:
    """Background work: `job()` at start and then every `every_s` seconds, beside the service's main
    work rather than inside it. A failed run is logged; the next one comes anyway."""

    def __init__(self, name: str, every_s: float, job: Callable[[], Awaitable[object]]):
        self.name, self.every_s, self.job = name, every_s, job
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        await cancel(self.task)

    async def _loop(self) -> None:
        log = structlog.get_logger("sendstream.periodic")
        while True:
            try:
                await self.job()
            except Exception:
                log.exception("periodic job failed; it runs again later", job=self.name, every_s=self.every_s)
            await asyncio.sleep(self.every_s)


# Registers a service's consumers on the broker; may hand back background work to run with them.
Register = Callable[[KafkaBroker, CommonSettings, asyncpg.Pool], Background | Sequence[Background] | None]


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


async def serve_operations(host: str, port: int, broker: KafkaBroker, stuck_after_s: float) -> web.AppRunner:
    """/healthz (up and connected to the broker), /readyz (and every consumer has joined its group, and
    none of its consumers or publishers is stuck) and Prometheus /metrics, for probes and scraping."""

    async def healthz(_: web.Request) -> web.Response:
        ok = await broker.ping(timeout=2)
        return web.json_response({"status": "ok" if ok else "broker unreachable"}, status=200 if ok else 503)

    async def readyz(request: web.Request) -> web.Response:
        if problems := stuck(stuck_after_s):
            return web.json_response({"status": "stuck", "stuck": problems}, status=503)
        if not consumers_joined():
            return web.json_response({"status": "joining consumer groups"}, status=503)
        return await healthz(request)

    async def metrics(_: web.Request) -> web.Response:
        return metrics_response()

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
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
    registered = register(broker, settings, pool)
    backgrounds = (
        [] if registered is None else [registered] if isinstance(registered, Background) else registered
    )
    stop = stop_event()
    await anchor_groups(settings)
    await broker.start()
    for background in backgrounds:
        await background.start()
    operations = (
        await serve_operations(settings.metrics_host, settings.metrics_port, broker, settings.stuck_after_s)
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
        await commit_handled()  # first: a batch may be finished by background work (decide's publisher)
        for background in backgrounds:
            await background.stop()
        await broker.stop()
        await pool.close()


def run(main: Coroutine[Any, Any, None], settings: CommonSettings) -> None:
    """Run a service's main coroutine on the configured event loop."""
    if settings.event_loop == "uvloop":
        import uvloop  # noqa: PLC0415 - not installed on Windows, where SENDSTREAM_EVENT_LOOP=asyncio

        uvloop.run(main)
    else:
        asyncio.run(main)


def main(name: str, settings: CommonSettings, register: Register) -> None:
    configure_logging(settings.log_level, settings.log_format, service=name)
    run(serve(name, settings, register), settings)
