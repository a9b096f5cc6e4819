"""A local SMTP sink for `make run`: accepts every message and keeps it as an .eml file.

The README walk-through's mailbox points its relay here, so dispatch delivers through a real SMTP
conversation with nothing leaving the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import structlog
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


async def serve(host: str, port: int, directory: Path | None) -> None:
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    controller = Controller(SinkHandler(directory), hostname=host, port=port)
    controller.start()
    log.info("smtp sink listening", host=host, port=port, directory=str(directory))
    stop = stop_event()
    try:
        await stop.wait()
    finally:
        controller.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2526)
    parser.add_argument("--dir", type=Path, default=Path(".data/sink"))
    parser.add_argument("--discard", action="store_true", help="accept and drop (benchmarks)")
    args = parser.parse_args()
    configure_logging(service="sink")
    asyncio.run(serve(args.host, args.port, None if args.discard else args.dir))
