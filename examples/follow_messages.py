"""An internal system following sendstream's message lifecycle straight from Kafka, as a CRM or a
warehouse loader would: its own consumer group on `<prefix>.messages`, the events parsed with the
project's schemas (documented in the AsyncAPI document, `GET /asyncapi.json`).

    python examples/follow_messages.py [--group crm-sync] [--count N]

It reads `KAFKA_BOOTSTRAP_SERVERS`, `SENDSTREAM_KAFKA_TOPIC_PREFIX` (defaults: `make run`'s) and the group
timeouts the services use (`SENDSTREAM_KAFKA_SESSION_TIMEOUT_MS`, `..._HEARTBEAT_INTERVAL_MS`), starts
at the beginning of the log the first time and where its group left off after that, prints one line
per event and commits after each batch it printed. With `--count`, it exits after that many events.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from aiokafka import AIOKafkaConsumer

from schemas import topics
from schemas.events import parse_event
from services.common.settings import LocalSettings


async def follow(bootstrap: str, prefix: str, group: str, count: int | None) -> int:
    consumer = AIOKafkaConsumer(
        topics.MESSAGES.name(prefix),
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        # As the services are set up (make run sets them short for its embedded broker, where a member that
        # left is only forgotten when its session times out, and the next run's join waits for that).
        session_timeout_ms=int(os.environ.get("SENDSTREAM_KAFKA_SESSION_TIMEOUT_MS", "10000")),
        heartbeat_interval_ms=int(os.environ.get("SENDSTREAM_KAFKA_HEARTBEAT_INTERVAL_MS", "3000")),
    )
    await consumer.start()
    seen = 0
    try:
        while count is None or seen < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=100)
            for records in batches.values():
                for record in records:
                    event = parse_event(record.value)
                    payload = event.payload
                    print(
                        f"{event.occurred_at.isoformat(timespec='milliseconds')} {event.type:<18}"
                        f" org={event.org_id} message={getattr(payload, 'message_id', '')}",
                        flush=True,
                    )
                    seen += 1
            if batches:
                await consumer.commit()  # at least once: a restart reprints what it had not committed
    finally:
        await consumer.stop()
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--group", default="crm-sync", help="This system's consumer group.")
    parser.add_argument("--count", type=int, help="Exit after this many events.")
    args = parser.parse_args()
    asyncio.run(
        follow(
            os.environ.get("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{LocalSettings().kafka_port}"),
            os.environ.get("SENDSTREAM_KAFKA_TOPIC_PREFIX", "sendstream"),
            args.group,
            args.count,
        )
    )


if __name__ == "__main__":
    main()
