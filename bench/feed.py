"""Feed latency: an event on the log -> a tenant's Server-Sent Events client (`GET /v1/events/stream`),
against the raw limit measured in the same run: one aiokafka record produced -> a plain consumer
that is already polling.

The whole stack runs (as `make bench` starts it); sends arrive at a fixed rate while one client holds
the stream open. Each event's latency is the time the client parsed it minus its `occurred_at` (set
as the event is made, just before it is produced; one machine, one clock): the archiver reading it,
its commit, the NOTIFY, the ingress reading the page and writing it.
Usage: `python -m bench.feed [--rate 20 --seconds 15]` (also run by `make bench`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import datetime

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.send_pipeline import Client, ms, new_topic, running_pipeline, setup_identity, tenant_client


async def raw_latencies(bootstrap: str, n: int = 300) -> list[float]:
    """One record at a time: produced (acks=all) -> received by a consumer already polling."""
    topic = await new_topic(bootstrap, "feed", 1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=10
    )
    await producer.start()
    await consumer.start()
    out = []
    try:
        for _ in range(n):
            started = time.perf_counter()
            await producer.send_and_wait(topic, b"x" * 512)
            await consumer.getone()
            out.append(time.perf_counter() - started)
    finally:
        await producer.stop()
        await consumer.stop()
    return out


async def stream(
    session: aiohttp.ClientSession, client: Client, into: list[tuple[str, float]], ready: asyncio.Event
):
    """Read the organization's stream: (event type, latency) for every event."""
    async with session.get(
        client.base + "/v1/events/stream", headers={"Authorization": f"Bearer {client.key}"}
    ) as r:
        ready.set()
        data = ""
        async for raw in r.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                data = line[6:]
            elif not line and data:
                event = json.loads(data)
                at = datetime.fromisoformat(event["occurredAt"]).timestamp()
                into.append((event["type"], time.time() - at))
                data = ""


async def main(args: argparse.Namespace) -> None:
    async with running_pipeline("feed", durable=True) as pipeline:
        raw = await raw_latencies(pipeline.infra.env["KAFKA_BOOTSTRAP_SERVERS"])
        async with aiohttp.ClientSession() as session:
            client = await tenant_client(session, pipeline, "feed")
            handle, _ = await setup_identity(client, pipeline.sink_port)
            seen: list[tuple[str, float]] = []
            ready = asyncio.Event()
            reader = asyncio.create_task(stream(session, client, seen, ready))
            await ready.wait()
            sends = int(args.rate * args.seconds)
            started = time.perf_counter()
            pending = []
            for i in range(sends):
                await asyncio.sleep(max(0.0, started + i / args.rate - time.perf_counter()))
                pending.append(asyncio.create_task(client.post(
                    f"/v1/identities/{handle}/send", {"to": f"lead-{i}@example.test", "subject": "Hi", "text": "Hello"}
                )))  # fmt: skip
            await asyncio.gather(*pending)
            await asyncio.sleep(5)  # the last events reach the stream
            reader.cancel()
    by_type: dict[str, list[float]] = {}
    for kind, latency in seen:
        by_type.setdefault(kind, []).append(latency)
    everything = [latency for _, latency in seen]
    print(f"\nfeed bench: {sends} sends at {args.rate}/s, one SSE client; whole stack on this machine")
    print("\nraw limit (same broker, this run)")
    print(f"  aiokafka produce (acks=all) -> polling consumer  {ms(raw)}")
    print("\nevent occurred -> SSE client")
    print(f"  all {len(everything)} events                             {ms(everything)}"
          f"   = {sorted(everything)[len(everything) // 2] / sorted(raw)[len(raw) // 2]:.0f} x raw p50")  # fmt: skip
    for kind, values in sorted(by_type.items()):
        print(f"  {kind:<24} ({len(values):5d})          {ms(values)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=15)
    asyncio.run(main(parser.parse_args()))
