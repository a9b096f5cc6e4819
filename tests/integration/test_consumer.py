"""The consumer contract of `services.common.broker.subscribe`, against the real broker."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from devstack.infra import TANSU_TUNING
from schemas.events import MessageFailed, MessageFailedPayload
from schemas.ids import new_id
from schemas.topics import Topic, topic_of
from services.common.broker import (
    PARKED,
    commit_handled,
    ensure_topics,
    make_broker,
    publish_events,
    subscribe,
)
from services.common.settings import CommonSettings
from tests.conftest import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def committed(settings: CommonSettings, group: str, topic: str) -> int | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group, partitions=[TopicPartition(topic, 0)])
        meta = offsets.get(TopicPartition(topic, 0))
        return meta.offset if meta is not None and meta.offset >= 0 else None
    finally:
        await admin.close()


async def lab_topic(service_env: dict, **overrides: object) -> tuple[CommonSettings, Topic, str]:
    """Settings tuned as the services' are for the test broker (with `overrides`), and a fresh
    one-partition topic with its full name."""
    tuning = {k.removeprefix("SENDSTREAM_").lower(): v for k, v in TANSU_TUNING.items()}
    settings = CommonSettings(
        kafka_bootstrap_servers=service_env["KAFKA_BOOTSTRAP_SERVERS"],
        database_url=service_env["DATABASE_URL"],  # where publishers ring their consumers (wake on work)
        kafka_topic_prefix=f"t{uuid.uuid4().hex[:6]}",
        **{**tuning, **overrides},
    )
    topic = Topic("lab", "message_id", (MessageFailed,), partitions=1)
    await ensure_topics(settings, [topic])
    return settings, topic, topic.name(settings.kafka_topic_prefix)


async def test_handled_batches_are_committed_and_a_restarted_consumer_resumes_after_them(
    service_env: dict,
) -> None:
    """Offsets are committed only for handled batches, within the commit interval, and a consumer that
    comes back reads only what it had not handled."""
    settings, topic, name = await lab_topic(service_env, kafka_commit_interval_ms=300)
    handled: list[str] = []

    def consumer():
        broker = make_broker(settings, "test")

        @subscribe(broker, settings, [topic], group="lab")
        async def handle(batch: list) -> None:
            handled.extend(e.payload.reason for e in batch)

        return broker

    async def publish(broker, *reasons: str) -> None:
        for r in reasons:
            event = MessageFailed(
                org_id=new_id(), payload=MessageFailedPayload(message_id=new_id(), reason=r)
            )
            await broker.publish(event.model_dump_json().encode(), name, key=b"same")

    group = f"{settings.kafka_topic_prefix}.lab"

    def handled_count(n: int):
        async def probe() -> bool:
            return len(handled) >= n

        return probe

    def committed_at(n: int):
        async def probe() -> bool:
            return await committed(settings, group, name) == n

        return probe

    async with consumer() as broker:
        await broker.start()
        await publish(broker, "a", "b", "c")
        await eventually(handled_count(3), timeout=20)
        await eventually(committed_at(3), timeout=5, interval=0.1)

    async with consumer() as broker:
        await publish(broker, "d", "e")
        await broker.start()
        await eventually(handled_count(5), timeout=30, interval=0.1)
        await eventually(committed_at(5), timeout=5, interval=0.1)
    assert handled == ["a", "b", "c", "d", "e"]  # nothing handled twice: the restart resumed at the commit


async def test_records_of_other_types_are_passed_over_unparsed(service_env: dict) -> None:
    """With `only`, a record whose event-type header names another type is never parsed (so not parked
    even if it would not parse); a record of a wanted type, or without the header, is handled."""
    settings, topic, name = await lab_topic(service_env)
    handled: list[str] = []
    broker = make_broker(settings, "test")

    @subscribe(broker, settings, [topic], group="lab-only", only={"MessageFailed"})
    async def handle(batch: list) -> None:
        handled.extend(e.payload.reason for e in batch)

    def failed(reason: str) -> bytes:
        event = MessageFailed(
            org_id=new_id(), payload=MessageFailedPayload(message_id=new_id(), reason=reason)
        )
        return event.model_dump_json().encode()

    async with broker:
        await broker.start()
        await broker.publish(b"not json at all", name, key=b"k", headers={"event-type": "SendAccepted"})
        await broker.publish(failed("wanted"), name, key=b"k", headers={"event-type": "MessageFailed"})
        await broker.publish(failed("no header"), name, key=b"k")

        async def both() -> bool:
            return len(handled) >= 2

        await eventually(both, timeout=20)
    assert handled == ["wanted", "no header"]
    assert PARKED.labels("lab-only")._value.get() == 0  # the unparsable record was never looked at


async def test_a_clean_stop_commits_what_was_handled(service_env: dict) -> None:
    """Offsets waiting for the commit interval are committed by commit_handled() (what a service's stop
    calls before its consumers close), so a restart reads nothing twice."""
    # nothing but the first batch is committed on its own
    settings, topic, name = await lab_topic(service_env, kafka_commit_interval_ms=600_000)
    handled: list[str] = []
    broker = make_broker(settings, "test")

    @subscribe(broker, settings, [topic], group="lab")
    async def handle(batch: list) -> None:
        handled.extend(e.payload.reason for e in batch)

    async def count(n: int) -> bool:
        return len(handled) >= n

    group = f"{settings.kafka_topic_prefix}.lab"

    async def committed_is(n: int) -> bool:
        return await committed(settings, group, name) == n

    async with broker:
        await broker.start()
        for i, reason in enumerate(("a", "b", "c")):
            event = MessageFailed(
                org_id=new_id(), payload=MessageFailedPayload(message_id=new_id(), reason=reason)
            )
            await broker.publish(event.model_dump_json().encode(), name, key=b"same")
            await eventually(lambda i=i: count(i + 1), timeout=20)  # three batches, one event each
            if i == 0:  # the first batch's is committed at once (again shortly if a rebalance refused it)
                await eventually(lambda: committed_is(1), timeout=10, interval=0.1)
        await asyncio.sleep(0.5)  # then none
        assert await committed(settings, group, name) == 1
        await commit_handled()
        await eventually(lambda: committed_is(3), timeout=5, interval=0.1)


async def test_a_batch_finished_later_holds_back_its_offsets_and_those_after_it(service_env: dict) -> None:
    """A handler may hand back what finishes its batch (decide publishes once its decisions are durable).
    Offsets then advance only over finished batches, in order: a later batch finishing first commits
    nothing until the earlier one has finished."""
    settings, topic, name = await lab_topic(service_env, kafka_commit_interval_ms=0)
    finishing: dict[str, asyncio.Future] = {}
    broker = make_broker(settings, "test")

    @subscribe(broker, settings, [topic], group="lab-later")
    async def handle(batch: list) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        for e in batch:
            finishing[e.payload.reason] = future
        return future

    group = f"{settings.kafka_topic_prefix}.lab-later"

    async def committed_is(n: int | None) -> bool:
        return await committed(settings, group, name) == n

    async with broker:
        await broker.start()
        for reason in ("a", "b"):
            event = MessageFailed(
                org_id=new_id(), payload=MessageFailedPayload(message_id=new_id(), reason=reason)
            )
            await broker.publish(event.model_dump_json().encode(), name, key=b"same")
            await eventually(lambda r=reason: asyncio.sleep(0, r in finishing), timeout=20)
        assert finishing["a"] is not finishing["b"]  # two batches
        finishing["b"].set_result(None)
        await asyncio.sleep(0.5)
        assert await committed(settings, group, name) is None  # "a" is not finished: nothing is committed
        finishing["a"].set_result(None)
        await eventually(lambda: committed_is(2), timeout=5, interval=0.1)


async def test_an_idle_consumer_is_woken_by_the_publisher_instead_of_polling(service_env: dict) -> None:
    """On the embedded broker a consumer's fetches wait for work (services/common/wake.py): once the
    broker confirmed an event, its publisher rings the topic's consumers. An idle consumer whose own
    fetch comes only every two minutes gets the event at once, so it was the ring that woke it."""
    settings, _, _ = await lab_topic(service_env, kafka_idle_fetch_ms=120_000)
    assert settings.kafka_wake_on_work
    topic = topic_of(
        MessageFailed(org_id=new_id(), payload=MessageFailedPayload(message_id=new_id(), reason=""))
    )
    await ensure_topics(settings, [topic])
    handled: list[str] = []
    broker = make_broker(settings, "test")

    @subscribe(broker, settings, [topic], group="woken")
    async def handle(batch: list) -> None:
        handled.extend(e.payload.reason for e in batch)

    async def publish(reason: str) -> None:
        event = MessageFailed(
            org_id=new_id(), payload=MessageFailedPayload(message_id=new_id(), reason=reason)
        )
        await publish_events(broker, settings, [event])

    async def has(reason: str) -> bool:
        return reason in handled

    async with broker:
        await broker.start()
        await publish("first")  # the consumer's first fetch, at its start, may take this one unrung
        await eventually(lambda: has("first"), timeout=30)
        await asyncio.sleep(1)  # its next fetch found nothing: it now waits for a ring
        await publish("second")
        await eventually(lambda: has("second"), timeout=30)
