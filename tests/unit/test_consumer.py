"""The consumer machinery (services/common/broker.py: Consumer) driven with plain records, without a
broker: a poison event is isolated and parked once while the rest of its batch is handled; the
handler's own outcome for it wins over parking; infrastructure trouble rewinds the whole batch; an
unreadable record is parked at once; records of types the consumer does not take are passed over."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest

from schemas import topics
from schemas.envelope import Envelope
from schemas.events import MailboxSyncChanged, MailboxSyncPayload
from schemas.ids import new_id
from services.common.broker import Consumer, Logged
from services.common.settings import CommonSettings

SETTINGS = CommonSettings(consumer_max_attempts=3, consumer_retry_backoff_s=0.001)
TOPIC = topics.MAILSYNC.name(SETTINGS.kafka_topic_prefix)


@dataclass
class Record:
    value: bytes
    offset: int
    topic: str = TOPIC
    partition: int = 0
    key: bytes = b"k"
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def records(n: int) -> list[Record]:
    events = [MailboxSyncChanged(org_id=new_id(), payload=MailboxSyncPayload(mailbox_id=new_id(), imap=True))
              for _ in range(n)]  # fmt: skip
    return [Record(e.model_dump_json().encode(), offset=i) for i, e in enumerate(events)]


class Dlq:
    def __init__(self) -> None:
        self.parked: list[dict[str, Any]] = []

    async def publish(self, value: bytes, topic: str, *, key: bytes, headers: dict[str, str]) -> None:
        self.parked.append({"topic": topic, "offset": int(headers["dlq-offset"]), "error": headers["dlq-error"]})


class Handler:
    """Handles batches, failing on every batch that holds the event at `poison` (an offset)."""

    def __init__(self, poison: int | None = None, error: Exception | None = None):
        self.poison, self.error = poison, error or ValueError("cannot handle this one")
        self.calls: list[list[int]] = []
        self.handled: list[int] = []

    async def __call__(self, events: list[Logged]) -> None:
        offsets = [e.offset for e in events]
        self.calls.append(offsets)
        if self.poison in offsets:
            raise self.error
        self.handled += offsets


def consumer(handler, dlq: Dlq, **kw) -> Consumer:
    return Consumer(handler, SETTINGS, [topics.MAILSYNC], "test", dlq.publish, positions=True, **kw)


async def test_a_poison_event_is_tried_alone_then_parked_once_and_the_others_are_handled() -> None:
    dlq, handler = Dlq(), Handler(poison=2)
    c = consumer(handler, dlq)
    batch = records(4)
    assert await c.handle(batch) is None  # no exception: the partition moves on
    assert handler.handled == [0, 1, 3]
    assert handler.calls == [[0, 1, 2, 3], [0], [1], [2], [2], [2], [3]]  # the batch, then one by one
    dead_letters = topics.MAILSYNC.dlq(SETTINGS.kafka_topic_prefix)
    assert dlq.parked == [{"topic": dead_letters, "offset": 2, "error": "ValueError: cannot handle this one"}]
    handler.poison = None
    await c.handle(batch)  # the same batch again (a redelivery): the parked record is passed over
    assert handler.calls[-1] == [0, 1, 3] and len(dlq.parked) == 1


async def test_the_handlers_own_outcome_for_a_poison_event_wins_over_parking() -> None:
    dlq, handler, settled = Dlq(), Handler(poison=1), []

    async def on_poison(event: Envelope, exc: BaseException) -> None:
        settled.append((event.payload.mailbox_id, str(exc)))

    batch = records(2)
    await consumer(handler, dlq, on_poison=on_poison).handle(batch)
    assert dlq.parked == [] and handler.handled == [0]
    poison = MailboxSyncChanged.model_validate_json(batch[1].value)
    assert settled == [(poison.payload.mailbox_id, "cannot handle this one")]


async def test_infrastructure_trouble_raises_for_the_whole_batch_to_come_again() -> None:
    dlq = Dlq()
    handler = Handler(poison=0, error=asyncpg.CannotConnectNowError("the database system is starting up"))
    c = consumer(handler, dlq)
    with pytest.raises(asyncpg.CannotConnectNowError):
        await c.handle(records(3))
    assert handler.calls == [[0, 1, 2]] and dlq.parked == [] and c.pauses == 1


async def test_an_unreadable_record_is_parked_at_once_and_types_not_taken_are_passed_over() -> None:
    dlq, handler = Dlq(), Handler()
    batch = records(3)
    batch[0].value = b'{"type": "MailboxSyncChanged", "payload": {}}'
    batch[2].headers = [("event-type", b"SomethingElse")]
    await consumer(handler, dlq, only={"MailboxSyncChanged"}).handle(batch)
    assert [p["offset"] for p in dlq.parked] == [0] and "ValidationError" in dlq.parked[0]["error"]
    assert handler.calls == [[1]]
