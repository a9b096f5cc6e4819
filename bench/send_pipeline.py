"""Sends through the whole pipeline, HTTP -> Kafka -> decide -> dispatch -> SMTP sink, against the raw limits.

Measured in one run, on one machine, with the same broker, database and sink:
  raw   aiokafka produce rate (1 KB keyed records, acks=all) and pre-serialised SMTP to the sink
        (one connection, and as many as dispatch uses per mailbox);
  e2e   sustained sends by concurrent HTTP clients until every one has the relay's 250, with HTTP
        latency and accept -> SMTP 250 latency;
  rate  HTTP latency at fixed request rates (open loop: requests start on schedule, whatever the
        previous ones do).
Prints each figure and its ratio to the raw limit. Usage: `make bench` or
`python -m bench.send_pipeline --sends 3000 --rates 100,200`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import aiosmtplib
import asyncpg
import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.cpu import CpuMeter
from devstack.infra import Infra, ensure_infra, free_port, wait_for_port
from devstack.local import Stack, wait_ready
from mail.compose import render_message
from schemas import topics
from schemas.events import Content, SendAcceptedPayload
from services.common.secrets import new_key
from services.common.settings import DispatchSettings


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * p / 100), len(ordered) - 1)]


def ms(values: list[float]) -> str:
    return f"p50 {pct(values, 50) * 1000:7.1f} ms   p99 {pct(values, 99) * 1000:7.1f} ms"


async def records_in(bootstrap: str, topic: str) -> int:
    """How many records a topic's log holds: the embedded broker's fetches cost more as it grows
    (`python -m bench.broker_growth`), so each phase says what it ran on."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer.topics()  # metadata, so the topic's partitions are known
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


async def new_topic(bootstrap: str, name: str, partitions: int = 6) -> str:
    """A fresh topic for a raw measurement: `bench-<name>-<random>`."""
    topic = f"bench-{name}-{uuid.uuid4().hex[:6]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    return topic


async def raw_produce_rate(bootstrap: str, n: int = 20_000) -> float:
    """aiokafka alone: keyed 1 KB records, acks=all, fire then wait for every ack."""
    topic = await new_topic(bootstrap, "raw")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=65536)
    await producer.start()
    value = b"x" * 1024
    try:
        started = time.perf_counter()
        futures = [await producer.send(topic, value, key=str(i % 500).encode()) for i in range(n)]
        await asyncio.gather(*futures)
        return n / (time.perf_counter() - started)
    finally:
        await producer.stop()


def raw_fsync_latencies(directory: Path, seconds: float = 8, rate: int = 200) -> list[float]:
    """8 KB write + fdatasync at a steady rate in PostgreSQL's data directory: what every commit waits on."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    block, took = b"x" * 8192, []
    try:
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            t = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            took.append(time.perf_counter() - t)
            if len(took) % 1000 == 0:
                os.lseek(fd, 0, os.SEEK_SET)
            time.sleep(max(started + len(took) / rate - time.monotonic(), 0))
    finally:
        os.close(fd)
        path.unlink()
    return took


def sample_message() -> bytes:
    p = SendAcceptedPayload(
        message_id=uuid.uuid4(), conv_id=uuid.uuid4(), mailbox_id=uuid.uuid4(), mailbox_email="s@tryacme.test",
        affinity="new", rfc_message_id="<bench@tryacme.test>", from_addr="s@tryacme.test", to=["lead@example.test"],
        content=Content(subject="Quick intro", text="Hi Morgan, " * 40, html="<p>Hi Morgan</p>" * 20),
        daily_cap=1, remaining=0,
    )  # fmt: skip
    return render_message(p, datetime.now(UTC))


async def raw_smtp_rate(port: int, connections: int, n: int = 2000) -> float:
    """Pre-serialised bytes over `connections` persistent SMTP connections to the sink."""
    data = sample_message()

    async def one_connection(count: int) -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        for _ in range(count):
            await client.sendmail("s@tryacme.test", ["lead@example.test"], data)
        await client.quit()

    started = time.perf_counter()
    await asyncio.gather(*(one_connection(n // connections) for _ in range(connections)))
    return (n // connections * connections) / (time.perf_counter() - started)


class Client:
    def __init__(self, session: aiohttp.ClientSession, base: str, key: str):
        self.session, self.base, self.key = session, base, key

    async def post(self, path: str, body: dict) -> tuple[int, dict, float]:
        started = time.perf_counter()
        async with self.session.post(
            self.base + path, json=body, headers={"Authorization": f"Bearer {self.key}"}
        ) as r:
            out = await r.json()
        return r.status, out, time.perf_counter() - started


async def setup_identity(client: Client, sink_port: int) -> tuple[str, str]:
    handle = f"bench-{uuid.uuid4().hex[:6]}@example.test"
    status, body, _ = await client.post("/v1/identities", {"handle": handle, "dailyCap": 1_000_000})
    assert status == 201, body
    status, body, _ = await client.post(f"/v1/identities/{handle}/mailboxes", {
        "email": f"sender-{uuid.uuid4().hex[:6]}@tryacme.test", "hourlyLimit": 1_000_000,
        "smtp": {"host": "127.0.0.1", "port": sink_port, "tls": "none"},
    })  # fmt: skip
    assert status == 201, body
    return handle, str(uuid.UUID(body["id"].removeprefix("acc_")))


async def sustained(
    client: Client, pool: asyncpg.Pool, handle: str, mailbox: str, n: int, concurrency: int
) -> dict:
    """n sends from `concurrency` clients as fast as they are answered; done when all have the relay's 250."""
    latencies: list[float] = []
    counter = iter(range(n))
    run = uuid.uuid4().hex[:6]

    async def worker() -> None:
        for i in counter:
            status, body, took = await client.post(
                f"/v1/identities/{handle}/send",
                {"to": f"lead-{run}-{i}@example.test", "subject": f"Step {i}", "text": "Hi Morgan, " * 40},
            )
            assert status == 202, body
            latencies.append(took)

    identity = await pool.fetchval("SELECT id FROM identities WHERE handle = $1", handle)
    before = await sent_by(pool, mailbox)
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    http_done = time.perf_counter()
    deadline = time.monotonic() + 180
    while await sent_by(pool, mailbox) - before < n:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"only {await sent_by(pool, mailbox) - before} of {n} sends reached the sink; see the logs"
            )
        await asyncio.sleep(0.05)
    finished = time.perf_counter()
    accept_to_250 = await accept_to_250_latencies(pool, identity, n)
    return {
        "rate": n / (finished - started),
        "http_rate": n / (http_done - started),
        "http": latencies,
        "accept_to_250": accept_to_250,
    }


async def sent_by(pool: asyncpg.Pool, mailbox: str) -> int:
    """Sends whose relay 250 dispatch has recorded (no projection lag in this count)."""
    return await pool.fetchval(
        """SELECT count(*) FROM processed_events WHERE consumer = 'dispatch'
              AND outputs -> 0 ->> 'type' = 'MessageSent' AND outputs -> 0 -> 'payload' ->> 'mailbox_id' = $1""",
        mailbox,
    )


# Each archived event once per message it is about (a request for several messages, once for each).
TRAIL = """trail AS (SELECT m AS message_id, type, occurred_at FROM event_archive, unnest(message_ids) AS m
                  WHERE type IN ('SendRequested', 'SendAccepted', 'MessageSent'))"""


async def accept_to_250_latencies(pool: asyncpg.Pool, identity: uuid.UUID, n: int) -> list[float]:
    """From each SendAccepted to its MessageSent (occurred_at of both), once the archive has them all."""
    deadline = time.monotonic() + 120
    rows: list = []
    while time.monotonic() < deadline:
        rows = await pool.fetch(
            f"""WITH {TRAIL} SELECT extract(epoch FROM s.occurred_at - a.occurred_at) AS took
                 FROM trail a JOIN trail s ON s.message_id = a.message_id
                 JOIN messages m ON m.id = a.message_id
                WHERE a.type = 'SendAccepted' AND s.type = 'MessageSent' AND m.identity_id = $1""",
            identity,
        )
        if len(rows) >= n:
            break
        await asyncio.sleep(0.2)
    return [float(r["took"]) for r in rows]


async def between(pool: asyncpg.Pool, first: str, then: str, recipient_like: str) -> list[float]:
    """From each message's `first` event to its `then` event (occurred_at of both), for the messages to
    `recipient_like`: SendRequested -> SendAccepted is the part of HTTP latency spent in Kafka and decide;
    SendAccepted -> MessageSent is what a user waits for after the answer, until the relay's 250."""
    rows = await pool.fetch(
        f"""WITH {TRAIL} SELECT extract(epoch FROM b.occurred_at - a.occurred_at) AS took
             FROM trail a JOIN trail b ON b.message_id = a.message_id AND b.type = $2
             JOIN messages m ON m.id = a.message_id
            WHERE a.type = $1 AND m.to_addrs[1] LIKE $3""",
        first,
        then,
        recipient_like,
    )
    return [float(r["took"]) for r in rows]


async def one_at_a_time(client: Client, handle: str, n: int = 50) -> list[float]:
    """The floor: HTTP latency of sends made one after another on an otherwise idle system."""
    latencies = []
    for i in range(n):
        status, body, took = await client.post(
            f"/v1/identities/{handle}/send", {"to": f"floor-{i}@example.test", "subject": "s", "text": "t"}
        )
        assert status == 202, body
        latencies.append(took)
        await asyncio.sleep(0.02)
    return latencies


async def fixed_rate(
    client: Client, handle: str, rate: int, seconds: float
) -> tuple[list[tuple[float, float]], int]:
    """Open loop: a request starts every 1/rate s regardless of the others; returns (start, seconds) of
    each accepted one, and how many were shed (503 `overloaded`: the pipeline fell behind)."""
    latencies: list[tuple[float, float]] = []
    shed = 0
    tasks = []

    async def one(i: int) -> None:
        nonlocal shed
        sent_at = time.monotonic()
        status, body, took = await client.post(
            f"/v1/identities/{handle}/send", {"to": f"r{rate}-{i}@example.test", "subject": "s", "text": "t"}
        )
        if status == 503 and body.get("error", {}).get("type") == "overloaded":
            shed += 1
            return
        assert status == 202, body
        latencies.append((sent_at, took))

    started = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return latencies, shed


@dataclass
class Pipeline:
    infra: Infra
    data: Path
    stack: Stack
    sink_port: int
    base: str
    key: str


@contextlib.asynccontextmanager
async def running_pipeline(
    name: str, *, durable: bool, env: dict[str, str] | None = None
) -> AsyncIterator[Pipeline]:
    """Broker, PostgreSQL, every service and a discarding SMTP sink, all started here and stopped after
    (`env`: settings of the benchmark's own)."""
    data = Path(tempfile.mkdtemp(prefix=f"sendstream-{name}-"))
    data.chmod(0o755)
    infra = ensure_infra(data, durable=durable)
    sink_port, http_port = free_port(), free_port()
    key = "sk_live_" + secrets.token_urlsafe(16)
    env = {
        **infra.env,
        "SENDSTREAM_BOOTSTRAP_API_KEY": key,
        "SENDSTREAM_HTTP_PORT": str(http_port),
        "SENDSTREAM_INBOUND_PORT": str(free_port()),
        "SENDSTREAM_KAFKA_TOPIC_PREFIX": f"{name}{uuid.uuid4().hex[:6]}",
        "SENDSTREAM_LOG_LEVEL": os.environ.get("SENDSTREAM_LOG_LEVEL", "WARNING"),
        "SENDSTREAM_SECRET_KEYS": json.dumps([new_key()]),
        # The benchmarks' relays, IMAP server and receivers are local (and take passwords without TLS).
        "SENDSTREAM_EGRESS_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
        "SENDSTREAM_EGRESS_CLEARTEXT_AUTH_NETWORKS": '["127.0.0.0/8"]',
        "SENDSTREAM_SHARED_DOMAINS": '["example.test", "tryacme.test"]',  # tenants' addresses, unproven
        **(env or {}),
    }
    stack = Stack(env, log_dir=data)
    stack.start("sink", ["-m", "devstack.sink", "--port", str(sink_port), "--discard"])
    try:
        stack.start_services(90)
        wait_for_port("127.0.0.1", sink_port, 20)
        wait_ready(f"http://127.0.0.1:{http_port}/readyz", 90, stack)
        yield Pipeline(infra, data, stack, sink_port, f"http://127.0.0.1:{http_port}", key)
    finally:
        stack.stop_all()
        infra.stop()


async def tenant_client(session: aiohttp.ClientSession, pipeline: Pipeline, name: str) -> Client:
    """A client holding the admin key of a new organization (the operator key only creates it)."""
    status, org, _ = await Client(session, pipeline.base, pipeline.key).post(
        "/v1/organizations", {"name": name}
    )
    assert status == 201, org
    return Client(session, pipeline.base, org["apiKey"])


async def main(args: argparse.Namespace) -> None:
    async with running_pipeline("bench", durable=not args.no_fsync) as pipeline:
        infra, sink_port = pipeline.infra, pipeline.sink_port
        pool = await asyncpg.create_pool(infra.env["DATABASE_URL"], min_size=1, max_size=2)
        try:
            lanes = DispatchSettings().smtp_pool_size
            produce = await raw_produce_rate(infra.env["KAFKA_BOOTSTRAP_SERVERS"])
            smtp_1 = await raw_smtp_rate(sink_port, 1)
            smtp_n = await raw_smtp_rate(sink_port, lanes)
            fsyncs = await asyncio.to_thread(raw_fsync_latencies, pipeline.data)

            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
                client = await tenant_client(session, pipeline, "bench")
                handle, mailbox = await setup_identity(client, sink_port)
                await sustained(
                    client, pool, handle, mailbox, 200, args.concurrency
                )  # warm-up: caches, pools
                await asyncio.sleep(2)
                floor = await one_at_a_time(client, handle)
                e2e = await sustained(client, pool, handle, mailbox, args.sends, args.concurrency)
                requests_topic = topics.REQUESTS.name(pipeline.stack.env["SENDSTREAM_KAFKA_TOPIC_PREFIX"])
                rates, cpu, logged, shed = {}, {}, {}, {}
                for r in args.rates:
                    logged[r] = await records_in(infra.env["KAFKA_BOOTSTRAP_SERVERS"], requests_topic)
                    with CpuMeter() as cpu[r]:
                        accepted, shed[r] = await fixed_rate(client, handle, r, args.seconds)
                        rates[r] = [t for _, t in accepted]
                await asyncio.sleep(3)  # let the audit view catch up
                decide_floor = await between(pool, "SendRequested", "SendAccepted", "floor-%")
                decide_at = {
                    r: await between(pool, "SendRequested", "SendAccepted", f"r{r}-%") for r in args.rates
                }
                relay_at = {
                    r: await between(pool, "SendAccepted", "MessageSent", f"r{r}-%") for r in args.rates
                }
        finally:
            await pool.close()

        print(
            f"\nsendstream bench on {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
            f"{'fsync off' if args.no_fsync else 'fsync on'}; sink discards; everything on this machine"
        )
        print("\nraw limits (same broker, same sink, this run)")
        print(f"  aiokafka produce, 1 KB keyed, acks=all        {produce:9.0f} msg/s")
        print(f"  SMTP pre-serialised, 1 connection             {smtp_1:9.0f} msg/s")
        print(f"  SMTP pre-serialised, {lanes} connections            {smtp_n:9.0f} msg/s")
        print(
            f"  disk: 8 KB write + fdatasync, 200/s           {ms(fsyncs)}   max {max(fsyncs) * 1000:.1f} ms"
        )
        print(f"\nend to end: {args.sends} sends, {args.concurrency} concurrent HTTP clients, one mailbox")
        print(
            f"  HTTP -> SMTP 250 (all sent)                   {e2e['rate']:9.0f} msg/s"
            f"   = {e2e['rate'] / smtp_n:.2f} x raw SMTP ({lanes} conn), {e2e['rate'] / smtp_1:.2f} x (1 conn),"
            f" {e2e['rate'] / produce:.3f} x raw produce"
        )
        print(f"  HTTP answered (202)                           {e2e['http_rate']:9.0f} req/s")
        print(f"  HTTP latency                                  {ms(e2e['http'])}")
        print(
            f"  accept -> SMTP 250                            {ms(e2e['accept_to_250'])}"
            f"   ({len(e2e['accept_to_250'])} measured)"
        )
        print("\none request at a time (the floor)")
        print(f"  HTTP latency                                  {ms(floor)}")
        print(f"  of which request -> decision                  {ms(decide_floor)}")
        for rate, lat in rates.items():
            print(
                f"\nfixed rate {rate} req/s for {args.seconds:.0f} s (open loop; "
                f"the requests log held {logged[rate]} records at the start)"
            )
            print(
                f"  HTTP latency                                  {ms(lat)}   mean {statistics.mean(lat) * 1000:.1f} ms"
            )
            if shed[rate]:
                print(f"  shed (503 overloaded, nothing sent)           {shed[rate]:9d}")
            print(f"  of which request -> decision                  {ms(decide_at[rate])}")
            print(f"  accept -> SMTP 250                            {ms(relay_at[rate])}")
            print(cpu[rate].report(len(lat)))
        print(
            "\ntargets: >= 300 sends/s end to end, HTTP p99 <= 50 ms at 100 req/s (first milestone);"
            " 0.6 x raw SMTP and p99 <= 25 ms at 200 req/s (goal)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sends", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")], default=[100, 200])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--no-fsync", action="store_true", help="PostgreSQL without fsync (as the tests run)")
    uvloop.run(main(parser.parse_args()))  # the load generator's own CPU is taken from the pipeline's
