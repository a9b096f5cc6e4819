"""Where the slow requests wait: sends at a fixed rate while PostgreSQL's wait events are sampled.

Every 20 ms the probe records what each busy database backend waits on; afterwards it compares the
samples taken while some request was slow (over --slow-ms) with the others. On this project's 2-core
VM it showed WAL flushes (LWLock WALWrite, IO WalSync) behind the tail latency. Usage:
`python -m bench.latency_probe --rate 100 --seconds 15`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter

import aiohttp
import asyncpg

from bench.cpu import CpuMeter
from bench.send_pipeline import fixed_rate, ms, running_pipeline, setup_identity, tenant_client


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
    samples: list[tuple[float, list[tuple]]] = []
    async with (
        running_pipeline("probe", durable=not args.no_fsync) as pipeline,
        aiohttp.ClientSession() as session,
    ):
        client = await tenant_client(session, pipeline, "probe")
        handle, _ = await setup_identity(client, pipeline.sink_port)
        for i in range(60):  # warm-up, not measured: pools, prepared statements, caches, joins
            await client.post(
                f"/v1/identities/{handle}/send", {"to": f"w{i}@example.test", "subject": "s", "text": "t"}
            )
        sampler = asyncio.create_task(sample_waits(pipeline.infra.env["DATABASE_URL"], samples))
        with CpuMeter() as cpu:
            requests = await fixed_rate(client, handle, args.rate, args.seconds)
        sampler.cancel()

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
    print(cpu.report(len(requests)))
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
