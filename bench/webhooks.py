"""Webhook deliveries through the whole pipeline to a local receiver, against the raw HTTP limit.

Measured in one run, on one machine:
  raw     signed POSTs of a pre-built body from one aiohttp client to the same receiver, with as many
          in flight as the webhooks service allows one endpoint (the limit it is compared to);
  drain   the webhooks service stopped while N messages are sent, then started: deliveries per second
          from its start to the last arrival (fan-out, claim, POST and record, with a backlog);
  live    messages sent at a fixed rate with the service running: event -> delivery latency (the
          event's `timestamp` in the payload to its arrival at the receiver).
Usage: `python -m bench.webhooks` (`--messages 3000 --rate 100`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from datetime import datetime

import aiohttp
import asyncpg
from aiohttp import web

from bench.send_pipeline import Client, ms, pct, running_pipeline, sent_by, setup_identity, tenant_client
from devstack.infra import free_port
from services.common.domain.webhooks.signing import headers, new_secret
from services.common.settings import WebhookSettings


class Receiver:
    """Answers 200 at once; records when each delivery arrived and when its event happened."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrivals: list[tuple[float, float]] = []  # (arrived, event occurred), epoch seconds
        self.ids: set[str] = set()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        if request.path == "/hooks":
            occurred = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00")).timestamp()
            self.arrivals.append((time.time(), occurred))
            self.ids.add(request.headers["webhook-id"])
        return web.Response(text="ok")

    async def start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        return runner


async def raw_post_rate(url: str, in_flight: int, n: int = 3000) -> float:
    """Signed POSTs of one body, `in_flight` at a time, over one pooled client: the receiver's raw limit."""
    body = '{"type":"message.sent","timestamp":"2026-01-01T00:00:00.000Z","data":{}}'
    secret = new_secret()
    todo = iter(range(n))
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            for i in todo:
                h = headers(f"whd_raw{i}", int(time.time()), body, [secret])
                async with session.post(url, data=body, headers=h) as r:
                    await r.read()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return n / (time.perf_counter() - started)


async def send_batch(client: Client, handle: str, recipients: list[str]) -> None:
    for start in range(0, len(recipients), 50):
        status, body, _ = await client.post(
            f"/v1/identities/{handle}/send",
            {"to": recipients[start : start + 50], "subject": "Hi", "text": "Hi Morgan"},
        )
        assert status == 202 and body["accepted"] == len(recipients[start : start + 50]), body


async def wait_for(receiver: Receiver, count: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while len(receiver.ids) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(receiver.ids)} of {count} webhooks arrived")
        await asyncio.sleep(0.02)


async def main(args: argparse.Namespace) -> None:
    receiver = Receiver()
    runner = await receiver.start()
    per_endpoint = WebhookSettings().webhook_endpoint_concurrency
    try:
        async with (
            running_pipeline("benchhooks", durable=not args.no_fsync) as pipeline,
            aiohttp.ClientSession() as session,
        ):
            raw = await raw_post_rate(f"http://127.0.0.1:{receiver.port}/raw", per_endpoint)
            client = await tenant_client(session, pipeline, "benchhooks")
            status, body, _ = await client.post(
                "/v1/webhooks", {"url": f"http://127.0.0.1:{receiver.port}/hooks", "events": ["message.sent"]}
            )
            assert status == 201, body
            handle, mailbox = await setup_identity(client, pipeline.sink_port)
            run = uuid.uuid4().hex[:6]
            pool = await asyncpg.create_pool(pipeline.infra.env["DATABASE_URL"], min_size=1, max_size=2)

            # drain: a backlog built while the service is down, then delivered as fast as it goes
            pipeline.stack.stop("webhooks")
            await send_batch(client, handle, [f"d-{run}-{i}@example.test" for i in range(args.messages)])
            while await sent_by(pool, mailbox) < args.messages:  # the drain competes with no sending
                await asyncio.sleep(0.1)
            restarted = time.time()
            pipeline.stack.start("webhooks")
            await wait_for(receiver, args.messages)
            first, last = min(a for a, _ in receiver.arrivals), max(a for a, _ in receiver.arrivals)
            drain_rate = (args.messages - 1) / (last - first)
            queued = await pool.fetchrow(
                "SELECT extract(epoch FROM max(created_at) - min(created_at)) AS span FROM webhook_deliveries"
            )
            fan_out_rate = (args.messages - 1) / max(float(queued["span"]), 1e-3)
            await pool.close()

            # live: a steady rate of messages, each delivered as it happens
            receiver.arrivals.clear()
            before = len(receiver.ids)
            count = int(args.rate * args.seconds)
            started = time.perf_counter()
            for i in range(0, count, 10):
                delay = started + i / args.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await send_batch(client, handle, [f"l-{run}-{j}@example.test" for j in range(i, i + 10)])
            await wait_for(receiver, before + count)
            lags = [arrived - occurred for arrived, occurred in receiver.arrivals]
    finally:
        await runner.cleanup()

    print(
        f"\nsendstream webhooks bench on {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"{'fsync off' if args.no_fsync else 'fsync on'}; receiver and everything else on this machine"
    )
    print("\nraw limit (same receiver, this run)")
    print(f"  signed POSTs, {per_endpoint} in flight, one client            {raw:9.0f} req/s")
    print(f"\ndrain: {args.messages} message.sent webhooks queued while the service was down, one endpoint")
    print(
        f"  deliveries (first -> last arrival)             {drain_rate:9.0f} /s   = {drain_rate / raw:.2f} x raw"
    )
    print(f"  fan-out (events read -> deliveries queued)     {fan_out_rate:9.0f} /s")
    print(
        f"  service start -> first delivery                {first - restarted:9.1f} s (start-up, group join)"
    )
    print(f"\nlive: {args.rate} messages/s for {args.seconds:.0f} s, delivered as they happen")
    print(f"  event -> delivery                              {ms(lags)}   max {pct(lags, 100) * 1000:.0f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rate", type=int, default=100, help="messages per second in the live phase")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--no-fsync", action="store_true", help="PostgreSQL without fsync")
    asyncio.run(main(parser.parse_args()))
