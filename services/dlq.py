"""Inspect and replay events parked on dead-letter topics.

    python -m services.dlq list              every parked record: where it came from, which group, why
    python -m services.dlq replay [--topic requests] [--offset N]
                                             publish parked records back to the topic they came from

Replaying is safe: every consumer is idempotent on `event_id`, so groups that had already handled
an event drop the copy, and the group that parked it tries again (after a fix was deployed, say).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas.topics import ALL_TOPICS, Topic
from services.common.settings import CommonSettings


@dataclass(frozen=True)
class Parked:
    dlq_topic: str
    dlq_offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]

    @property
    def source(self) -> str:
        return self.headers.get("dlq-topic", "")


async def read_parked(
    settings: CommonSettings, only: str | None = None, topics: Sequence[Topic] = ALL_TOPICS
) -> list[Parked]:
    """Every record on the dead-letter topics (of one source topic, if `only` names its suffix)."""
    prefix = settings.kafka_topic_prefix
    names = [t.dlq(prefix) for t in topics if only is None or t.suffix == only]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(n, p) for n in names for p in sorted(consumer.partitions_for_topic(n) or [])]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        parked: list[Parked] = []

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])

        while await behind():
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                for r in records:
                    headers = {k: v.decode(errors="replace") for k, v in r.headers or ()}
                    parked.append(Parked(tp.topic, r.offset, r.key, r.value, headers))
        return parked
    finally:
        await consumer.stop()


async def replay(settings: CommonSettings, records: list[Parked]) -> int:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
    )
    await producer.start()
    try:
        for r in records:
            await producer.send_and_wait(
                r.source, r.value, key=r.key, headers=[("dlq-replayed-from", str(r.dlq_offset).encode())]
            )
    finally:
        await producer.stop()
    return len(records)


async def main(args: argparse.Namespace) -> None:
    settings = CommonSettings()
    parked = await read_parked(settings, args.topic)
    if args.command == "list":
        for r in parked:
            print(
                f"{r.dlq_topic}@{r.dlq_offset}  from {r.source}:{r.headers.get('dlq-partition')}@"
                f"{r.headers.get('dlq-offset')}  group {r.headers.get('dlq-group')}  {r.headers.get('dlq-error', '')}"
            )
        print(f"{len(parked)} parked")
    else:
        chosen = [r for r in parked if args.offset is None or r.dlq_offset == args.offset]
        print(f"replayed {await replay(settings, chosen)}")


def cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["list", "replay"])
    parser.add_argument(
        "--topic", help="only this source topic (its suffix: requests, decisions, messages, ...)"
    )
    parser.add_argument(
        "--offset", type=int, help="replay: only the parked record at this dead-letter offset"
    )
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
