"""Dead-letter topics: poison records are parked with their story, listed, and can be replayed."""

from __future__ import annotations

import time
import uuid

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from schemas import topics
from schemas.events import Content, RequestedMessage, SendRequested, SendRequestedPayload
from services.common.ids import new_id
from services.common.settings import CommonSettings
from services.dlq import read_parked, replay
from tests.conftest import Api, Relay, eventually
from tests.integration.test_send import make_identity

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def settings_for(service_env: dict) -> CommonSettings:
    return CommonSettings(
        kafka_bootstrap_servers=service_env["KAFKA_BOOTSTRAP_SERVERS"],
        kafka_topic_prefix=service_env["SENDSTREAM_KAFKA_TOPIC_PREFIX"],
        kafka_enable_idempotence=False,
    )


async def test_poison_is_parked_listed_and_a_fixed_event_replays(
    api: Api, relay: Relay, db: asyncpg.Pool, service_env: dict
) -> None:
    """A malformed record is parked (not retried forever); a parked valid request, replayed, is sent."""
    settings = settings_for(service_env)
    requests_topic = topics.REQUESTS.name(settings.kafka_topic_prefix)
    marker = f"poison-{uuid.uuid4().hex}".encode()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(requests_topic, b'{"not": "an event", "m": "' + marker + b'"}', key=b"k")

        async def parked_poison():
            return [p for p in await read_parked(settings, "requests") if marker in p.value]

        [poison] = await eventually(parked_poison, timeout=20, interval=0.5)
        assert poison.source == requests_topic and poison.headers["dlq-group"] == "decide"
        assert poison.headers["dlq-error"].startswith("ValidationError")

        handle, _ = await make_identity(api, relay)
        identity = await db.fetchrow("SELECT id, org_id FROM identities WHERE handle = $1", handle)
        request = SendRequested(org_id=identity["org_id"], identity_id=identity["id"], payload=SendRequestedPayload(
            handle=handle, messages=[RequestedMessage(message_id=new_id(), conv_id=new_id(), to="late@example.test")],
            content=Content(subject="Replayed", text="t")))  # fmt: skip
        await producer.send_and_wait(
            topics.REQUESTS.dlq(settings.kafka_topic_prefix), request.model_dump_json().encode(),
            key=str(identity["id"]).encode(), headers=[("dlq-topic", requests_topic.encode())],
        )  # fmt: skip
    finally:
        await producer.stop()
    started = time.monotonic()
    [parked] = [
        p for p in await read_parked(settings, "requests") if str(request.event_id).encode() in p.value
    ]
    assert await replay(settings, [parked]) == 1
    [got] = await relay.wait_for(1, timeout=20)
    assert got.message["Subject"] == "Replayed" and time.monotonic() - started < 20
