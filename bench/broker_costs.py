"""What each kind of request costs the embedded broker (Tansu), in CPU: the floor under every figure
of the send pipeline that counts the broker.

Measured on an empty broker of its own, one kind at a time, with aiokafka as our services use it:
a produce of one record (how each HTTP request is produced), a produce of a 20-record batch, an
offset commit, and an idle consumer fetching with each hold our consumers use (Tansu holds a fetch for
its whole wait and spends CPU while it does). Then what the send pipeline's request mix costs the
broker per message at a given rate, from the counts given (defaults: as counted at 100 req/s, see
bench/README.md). A fetch that returns records costs more as the log grows (`bench.broker_growth`);
that is not in this floor.
Usage: `python -m bench.broker_costs [--rate 100]`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import AIOKafkaConnection

from bench.cpu import sample
from devstack.infra import start_tansu

SENT: Counter[str] = Counter()  # requests this process sent to the broker, by kind


def count_requests() -> None:
    send = AIOKafkaConnection.send

    def counted(self, request, expect_response=True):
        SENT[type(request).__name__] += 1
        return send(self, request, expect_response)

    AIOKafkaConnection.send = counted


def broker_cpu_s() -> float:
    return sum(seconds for name, seconds in sample().values() if name.startswith("broker"))


async def per_op(n: int, op: Callable[[int], Awaitable[object]]) -> float:
    """Broker CPU (ms) per call of `op`, over n calls made one after another."""
    before = broker_cpu_s()
    for i in range(n):
        await op(i)
    await asyncio.sleep(0.1)
    return (broker_cpu_s() - before) / n * 1000


async def held_fetch(bootstrap: str, topic: str, hold_ms: int, seconds: float) -> tuple[float, float]:
    """An idle consumer of `topic` fetching with `hold_ms`: (fetches a second, broker ms per fetch)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"g-{uuid.uuid4().hex[:6]}", fetch_max_wait_ms=hold_ms,
        auto_offset_reset="latest", session_timeout_ms=2000, heartbeat_interval_ms=300,
        rebalance_timeout_ms=200, consumer_timeout_ms=1000,
    )  # fmt: skip
    await consumer.start()
    try:
        while not consumer.assignment():
            await asyncio.sleep(0.05)
        await consumer.getmany(timeout_ms=500)
        fetched, cpu, started = SENT["FetchRequest"], broker_cpu_s(), time.monotonic()
        while time.monotonic() - started < seconds:
            await consumer.getmany(timeout_ms=1000)
        fetches = SENT["FetchRequest"] - fetched
        return fetches / seconds, (broker_cpu_s() - cpu) / max(fetches, 1) * 1000
    finally:
        await consumer.stop()


async def main(args: argparse.Namespace) -> None:
    count_requests()
    bootstrap, stop = start_tansu()
    try:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        run = uuid.uuid4().hex[:6]
        topics = {p: f"costs-{run}-{p}" for p in (1, 3, 6)}
        await admin.create_topics([NewTopic(name, p, 1) for p, name in topics.items()])
        await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        await producer.start()
        one = topics[3]
        produce = await per_op(1000, lambda i: producer.send_and_wait(one, b"x" * 1000, partition=i % 3))

        async def batch(_: int) -> None:
            await asyncio.gather(*[await producer.send(one, b"x" * 1000, partition=0) for _ in range(20)])

        produce_20 = await per_op(200, batch)
        consumer = AIOKafkaConsumer(
            one, bootstrap_servers=bootstrap, group_id=f"c-{run}", enable_auto_commit=False,
            session_timeout_ms=2000, heartbeat_interval_ms=300, rebalance_timeout_ms=200,
        )  # fmt: skip
        await consumer.start()
        while not consumer.assignment():
            await asyncio.sleep(0.05)
        partitions = sorted(consumer.assignment())
        commit = await per_op(500, lambda i: consumer.commit(dict.fromkeys(partitions, i + 1)))
        await consumer.stop()
        await producer.stop()
        print("Tansu, empty log, one request at a time: broker CPU per request")
        print(f"  produce, 1 record            {produce:6.3f} ms")
        print(f"  produce, a batch of 20       {produce_20:6.3f} ms")
        print(f"  offset commit, 3 partitions  {commit:6.3f} ms")
        print("  an idle consumer's fetches (the broker holds each for the whole wait):")
        holds: dict[int, tuple[float, float]] = {}
        for hold in (5, 50, 200):
            for partitions_n, name in topics.items():
                rate, cost = await held_fetch(bootstrap, name, hold, args.seconds)
                if partitions_n == 3:
                    holds[hold] = (rate, cost)
                print(
                    f"    hold {hold:3d} ms, {partitions_n} partition(s): {rate:5.0f} fetches/s, "
                    f"{cost:6.3f} ms each = {rate * cost / 1000:.3f} of a core"
                )
        mix = {
            "produce": (args.produces, produce),
            "fetch, 5 ms hold (decide)": (args.sync_fetches, holds[5][1]),
            "fetch, 50 ms hold (the others)": (args.background_fetches, holds[50][1]),
            "offset commit": (args.commits, commit),
        }
        print(f"\nthe pipeline's requests per message at {args.rate:.0f} req/s, at these costs:")
        total = 0.0
        for name, (per_message, cost) in mix.items():
            total += per_message * cost
            print(f"  {name:<32} {per_message:5.2f} x {cost:6.3f} ms = {per_message * cost:6.3f} ms")
        print(
            f"  the broker's floor: {total:.2f} ms a message (before the log grows), of issue 24's 4 ms for every process"
        )
    finally:
        stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3, help="length of each idle-fetch measurement")
    parser.add_argument("--rate", type=float, default=100, help="the rate the counts below were taken at")
    parser.add_argument("--produces", type=float, default=1.6, help="produce requests per message")
    parser.add_argument("--sync-fetches", type=float, default=1.3, help="decide's fetches per message")
    parser.add_argument(
        "--background-fetches", type=float, default=0.8, help="other consumers' fetches per message"
    )
    parser.add_argument("--commits", type=float, default=0.25, help="offset commits per message")
    asyncio.run(main(parser.parse_args()))
