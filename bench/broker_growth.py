"""The embedded broker's cost as its log grows: why the local stack slows down over time.

Tansu's memory storage keeps every record batch (no retention, no DeleteRecords). Measured here: one
producer at a steady rate (one record per batch, as each HTTP request is produced), one consumer
reading it as it comes, and the broker's CPU in consecutive windows while the partition fills up;
then a consumer idle at the end of that partition. A fetch that returns records costs time in
proportion to the batches the partition holds; an idle one does not. Kafka's cost does not grow so.
Usage: `python -m bench.broker_growth [--rate 100] [--windows 6] [--seconds 5]`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.cpu import sample
from devstack.infra import start_tansu


def broker_cpu_s() -> float:
    return sum(seconds for name, seconds in sample().values() if name.startswith("broker"))


async def main(args: argparse.Namespace) -> None:
    bootstrap, stop = start_tansu()
    try:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        topic = f"growth-{uuid.uuid4().hex[:6]}"
        await admin.create_topics([NewTopic(topic, 1, 1)])
        await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, fetch_max_wait_ms=args.hold_ms, auto_offset_reset="earliest"
        )
        await producer.start()
        await consumer.start()
        read = 0

        async def drain() -> None:
            nonlocal read
            while True:
                fetched = await consumer.getmany(timeout_ms=1000)
                read += sum(len(records) for records in fetched.values())

        reader = asyncio.create_task(drain())
        print(f"Tansu, one partition, {args.rate} one-record batches/s, a consumer reading them "
              f"({args.hold_ms} ms fetch hold); broker CPU in % of one core")  # fmt: skip
        written = 0
        for _ in range(args.windows):
            held, cpu, started = written, broker_cpu_s(), time.monotonic()
            while time.monotonic() - started < args.seconds:
                await producer.send_and_wait(topic, b"x" * 1000)
                written += 1
                await asyncio.sleep(max(0.0, started + (written - held) / args.rate - time.monotonic()))
            used = (broker_cpu_s() - cpu) / (time.monotonic() - started)
            print(f"  {held:6d} -> {written:6d} batches in the partition   {used * 100:5.1f}%")
        while read < written:
            await asyncio.sleep(0.05)
        cpu, started = broker_cpu_s(), time.monotonic()
        await asyncio.sleep(args.seconds)
        used = (broker_cpu_s() - cpu) / (time.monotonic() - started)
        print(f"  idle at the end of {written} batches                  {used * 100:5.1f}%")
        reader.cancel()
        await consumer.stop()
        await producer.stop()
    finally:
        stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--windows", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--hold-ms", type=int, default=5)
    asyncio.run(main(parser.parse_args()))
