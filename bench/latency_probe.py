"""Where the slow requests wait: sends at a fixed rate while PostgreSQL's wait events are sampled.

Every 20 ms the probe records what each busy database backend waits on; afterwards it compares the
samples taken while some request was slow (over --slow-ms) with the others. On this project's 2-core
VM it showed WAL flushes (LWLock WALWrite, IO WalSync) behind the tail latency. Usage:
`python -m bench.latency_probe --rate 100 --seconds 15`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
import asyncpg

from bench.send_pipeline import Client, ms, setup_identity
from services.common.infra import ensure_infra, free_port, wait_for_port
from services.common.secrets import new_key
from services.local import SERVICES, Stack, wait_ready


async def sample_waits(database_url: str, into: list[tuple[float, list[tuple]]], every: float = 0.02) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        while True:
            rows = await conn.fetch(
                """SELECT wait_event_type, wait_event, left(query, 50) FROM pg_stat_activity
                    WHERE state <> 'idle' AND pid <> pg_backend_pid() AND backend_type = 'client backend'"""
            )
            into.append((time.monotonic(), [tuple(r) for r in rows]))
            await asyncio.sleep(every)
    finally:
        await conn.close()


async def main(args: argparse.Namespace) -> None:
    data = Path(tempfile.mkdtemp(prefix="sendstream-probe-"))
    data.chmod(0o755)
    infra = ensure_infra(data, durable=not args.no_fsync)
    sink, http = free_port(), free_port()
    key = "sk_live_" + secrets.token_urlsafe(16)
    stack = Stack({**infra.env, "SENDSTREAM_BOOTSTRAP_API_KEY": key, "SENDSTREAM_HTTP_PORT": str(http),
                   "SENDSTREAM_LOG_LEVEL": "WARNING", "SENDSTREAM_SECRET_KEYS": json.dumps([new_key()])}, log_dir=data)  # fmt: skip
    stack.start("sink", ["-m", "services.sink", "--port", str(sink), "--discard"])
    for name in SERVICES:
        stack.start(name)
    samples: list[tuple[float, list[tuple]]] = []
    requests: list[tuple[float, float]] = []  # (start, seconds)
    try:
        wait_for_port("127.0.0.1", sink, 20)
        wait_ready(f"http://127.0.0.1:{http}/readyz", 90, stack)
        async with aiohttp.ClientSession() as session:
            client = Client(session, f"http://127.0.0.1:{http}", key)
            org = await client.post("/v1/organizations", {"name": "probe"})
            client = Client(session, client.base, org[1]["apiKey"])
            handle, _ = await setup_identity(client, sink)
            for i in range(60):  # warm-up, not measured: pools, prepared statements, caches, joins
                await client.post(
                    f"/v1/identities/{handle}/send", {"to": f"w{i}@example.test", "subject": "s", "text": "t"}
                )
            sampler = asyncio.create_task(sample_waits(infra.env["DATABASE_URL"], samples))

            async def one(i: int) -> None:
                started = time.monotonic()
                status, body, took = await client.post(
                    f"/v1/identities/{handle}/send",
                    {"to": f"p{i}-{uuid.uuid4().hex[:4]}@example.test", "subject": "s", "text": "t"},
                )
                assert status == 202, body
                requests.append((started, took))

            tasks, t0 = [], time.monotonic()
            for i in range(int(args.rate * args.seconds)):
                await asyncio.sleep(max(t0 + i / args.rate - time.monotonic(), 0))
                tasks.append(asyncio.create_task(one(i)))
            await asyncio.gather(*tasks)
            sampler.cancel()
    finally:
        stack.stop_all()
        infra.stop()

    slow = [(s, s + took) for s, took in requests if took * 1000 > args.slow_ms]
    inside, outside = Counter(), Counter()
    n_in = n_out = 0
    for t, rows in samples:
        stalled = any(a <= t <= b for a, b in slow)
        n_in, n_out = n_in + stalled, n_out + (not stalled)
        for row in rows:
            (inside if stalled else outside)[row] += 1
    print(f"{len(requests)} sends at {args.rate}/s: HTTP {ms([took for _, took in requests])}; "
          f"{len(slow)} over {args.slow_ms} ms; {n_in} samples while one was slow, {n_out} otherwise")  # fmt: skip
    for title, counts, n in (("while slow", inside, n_in), ("otherwise", outside, n_out)):
        print(f"\nbusy backends per sample, {title} (wait type, wait event, query):")
        for row, count in counts.most_common(args.top):
            print(f"  {count / max(n, 1):5.2f}  {row}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--slow-ms", type=float, default=120)
    parser.add_argument("--top", type=int, default=6)
    parser.add_argument("--no-fsync", action="store_true")
    asyncio.run(main(parser.parse_args()))
