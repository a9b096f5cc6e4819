"""Local sinks for `make run`: an SMTP server that keeps every message as an .eml file, and
(with --webhook-port) an HTTP server that keeps every webhook it receives as a .json file.

The README walk-through's mailbox points its relay here and its webhook endpoint at the HTTP side, so
dispatch and the webhooks service do real SMTP and HTTP with nothing leaving the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import structlog
from aiohttp import web
from aiosmtpd.controller import Controller

from services.common.logging import configure_logging
from services.common.service import stop_event

log = structlog.get_logger("sendstream.sink")


class SinkHandler:
    def __init__(self, directory: Path | None):
        self.directory = directory
        self.count = 0

    async def handle_DATA(self, server, session, envelope) -> str:
        self.count += 1
        if self.directory is None:
            return "250 2.0.0 accepted and discarded"
        name = f"{time.time_ns()}-{self.count}.eml"
        (self.directory / name).write_bytes(envelope.original_content or envelope.content)
        log.info("message kept", file=name, sender=envelope.mail_from, recipients=envelope.rcpt_tos)
        return "250 2.0.0 kept as " + name


async def serve_webhooks(host: str, port: int, directory: Path) -> web.AppRunner:
    """Answer 200 to every POST and keep its headers and body as `<time>.json` in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)

    async def keep(request: web.Request) -> web.Response:
        body = await request.text()
        name = f"{time.time_ns()}.json"
        kept = {"path": request.path, "headers": dict(request.headers), "body": body}
        (directory / name).write_text(json.dumps(kept, indent=2) + "\n")
        log.info("webhook kept", file=name, webhook_id=request.headers.get("webhook-id"))
        return web.Response(text="kept")

    app = web.Application()
    app.router.add_post("/{tail:.*}", keep)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("webhook sink listening", host=host, port=port, directory=str(directory))
    return runner


async def serve(host: str, port: int, directory: Path | None, webhook_port: int | None = None) -> None:
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    controller = Controller(SinkHandler(directory), hostname=host, port=port)
    controller.start()
    log.info("smtp sink listening", host=host, port=port, directory=str(directory))
    hooks = (
        await serve_webhooks(host, webhook_port, (directory or Path(".data/sink")) / "webhooks")
        if webhook_port
        else None
    )
    stop = stop_event()
    try:
        await stop.wait()
    finally:
        controller.stop()
        if hooks:
            await hooks.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2526)
    parser.add_argument("--dir", type=Path, default=Path(".data/sink"))
    parser.add_argument("--discard", action="store_true", help="accept and drop (benchmarks)")
    parser.add_argument("--webhook-port", type=int, help="also keep webhooks POSTed to this port")
    args = parser.parse_args()
    configure_logging(service="sink")
    asyncio.run(serve(args.host, args.port, None if args.discard else args.dir, args.webhook_port))
