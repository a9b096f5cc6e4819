"""How a send request waits for its decision.

Kafka has no request/response (FastStream's `request()` only works in its test client), so every
ingress process reads the decisions topic itself: all partitions, no consumer group (no join, no
rebalance), from the end. It is positioned before the ingress reports ready, so a decision for a
request published after that point is never missed. Decisions are matched to the waiting request by
`causation_id` (the request's `event_id`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from uuid import UUID

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas import topics
from schemas.envelope import Envelope
from schemas.events import parse_event
from services.common.settings import CommonSettings

log = structlog.get_logger("sendstream.ingress.decisions")


@dataclass
class Pending:
    expected: int
    decisions: list[Envelope] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class DecisionWaiter:
    def __init__(self, settings: CommonSettings):
        self.settings = settings
        self.topic = topics.DECISIONS.name(settings.kafka_topic_prefix)
        self.pending: dict[UUID, Pending] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=self.settings.kafka_fetch_max_wait_ms_sync,
        )
        await consumer.start()
        self.consumer = consumer
        await consumer.topics()  # refresh metadata so the partitions are known
        partitions = consumer.partitions_for_topic(self.topic) or set()
        if not partitions:
            raise RuntimeError(f"topic {self.topic} has no partitions; were topics created?")
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)  # resolve the end offsets now, not lazily on the first fetch
        self.task = asyncio.create_task(self._run(), name="decision-waiter")

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.consumer:
            await self.consumer.stop()

    def expect(self, request_event_id: UUID, count: int) -> Pending:
        pending = self.pending[request_event_id] = Pending(count)
        return pending

    def forget(self, request_event_id: UUID) -> None:
        self.pending.pop(request_event_id, None)

    async def wait(self, request_event_id: UUID, timeout: float) -> list[Envelope]:
        """The decisions that arrived within `timeout` (all of them, or fewer on timeout)."""
        pending = self.pending[request_event_id]
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pending.done.wait(), timeout)
            return list(pending.decisions)
        finally:
            self.forget(request_event_id)

    async def _run(self) -> None:
        assert self.consumer is not None
        while True:
            try:
                batches = await self.consumer.getmany(timeout_ms=1000, max_records=1000)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading decisions failed; retrying")
                await asyncio.sleep(0.5)
                continue
            if not self.pending:
                continue
            for records in batches.values():
                for record in records:
                    self._offer(record.value)

    def _offer(self, value: bytes) -> None:
        try:
            causation = json.loads(value).get("causation_id")
            pending = self.pending.get(UUID(causation)) if causation else None
            if pending is None:
                return
            event = parse_event(value)
        except (ValueError, TypeError):
            return  # not ours to judge: the decide service validated what it published
        if all(d.event_id != event.event_id for d in pending.decisions):
            pending.decisions.append(event)
        if len(pending.decisions) >= pending.expected:
            pending.done.set()
