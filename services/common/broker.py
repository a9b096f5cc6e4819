"""Kafka plumbing shared by every service: the broker, topic creation, publishing, and `subscribe`.

`subscribe` is how every consumer of ours is declared. It gives each one the same contract:
- an explicit consumer group (`<topic prefix>.<name>`); offsets are committed only for batches the
  handler finished, at most every `kafka_commit_interval_ms` (`Offsets`), and a failed batch is
  rewound and delivered again, never skipped. A handler may return an awaitable: the batch is then
  finished only when that completes (decide publishes its decisions once they are durable, beside
  deciding the next batch), and offsets still advance only over finished batches, in order;
- batches: the handler gets every parsed event of one fetch, so it can commit its database work once
  per batch (per-message commits are the pipeline's known ceiling); `bound(event)` puts an event's
  `event_id`, `correlation_id` and `message_id` into the log context;
- infrastructure trouble (database or broker unreachable) is retried with growing pauses, forever,
  and shows as the consumer being stuck (services/common/progress.py);
- anything else is one event's problem: that event is retried a few times in place, then given its
  terminal outcome by the consumer's `on_poison` (its message rejected or failed, visibly) or else
  parked, once, on the topic's dead-letter topic with the error in its headers; the partition moves
  on. An error on what the event says (a byte the database refuses: `is_content_error`) would come
  back on every attempt: that event is settled at once, holding nobody's events up. A handler that
  can tell a permanent failure itself (a message no relay will take) records it as that message's
  outcome instead of raising.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    UnsupportedVersionError,
)
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.message import StreamMessage
from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from schemas.envelope import Envelope
from schemas.events import message_id_of, parse_event
from schemas.topics import ALL_TOPICS, Topic, key_of, topic_of
from services.common import wake
from services.common.progress import Progress
from services.common.settings import CommonSettings

log = structlog.get_logger("sendstream.broker")

EVENTS = Counter("sendstream_consumer_events_total", "Events handled, by consumer group", ["group"])
BATCH_SECONDS = Histogram(
    "sendstream_consumer_batch_seconds",
    "Time to handle one batch, by consumer group",
    ["group"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RETRIES = Counter(
    "sendstream_consumer_retries_total", "Batches redelivered after a failure", ["group", "kind"]
)
PARKED = Counter("sendstream_consumer_parked_total", "Events parked on a dead-letter topic", ["group"])

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    KafkaError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    # "cannot switch to state N; another operation is in progress": a connection the server died under
    asyncpg.InternalClientError,
)
# Refusals of one record or one request that no retry changes.
PERMANENT_KAFKA_ERRORS: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    InvalidTopicError,
    TopicAuthorizationFailedError,
    UnsupportedVersionError,
)


class EventTooLarge(ValueError):
    """An event whose JSON exceeds `max_event_bytes`: no broker would take it, so it is never sent."""

    def __init__(self, event: Envelope, size: int, limit: int):
        super().__init__(f"{event.type} {event.event_id} is {size} bytes; at most {limit} fit in one event")
        self.size, self.limit = size, limit


# Errors an event causes by what it says, the same on every attempt: a byte or a value the database
# refuses (asyncpg.DataError: UntranslatableCharacterError, CharacterNotInRepertoireError...), text
# no encoding takes, an event too large for the log. Such an event is settled at once, not retried.
CONTENT_ERRORS: tuple[type[BaseException], ...] = (asyncpg.DataError, UnicodeError, EventTooLarge)


def is_content_error(exc: BaseException) -> bool:
    """A failure no retry of the same event changes (see CONTENT_ERRORS)."""
    return isinstance(exc, CONTENT_ERRORS) and not is_transient(exc)


def is_transient(exc: BaseException) -> bool:
    """Trouble a retry can fix (the database or broker unreachable, busy or timing out), as opposed to a
    refusal that would come back the same every time (a record too large, a byte the database refuses)."""
    return isinstance(exc, TRANSIENT_ERRORS) and not isinstance(exc, PERMANENT_KAFKA_ERRORS)


def make_broker(settings: CommonSettings, client_id: str) -> KafkaBroker:
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=1,
        # Our handlers take the fetched message as it is (see `_as_is`): no dependency injection,
        # whose context lookups FastStream 0.7 runs in a worker thread for every batch.
        apply_types=False,
        logger=None,  # our `subscribe` logs every outcome with structlog; FastStream's lines would double them
    )


async def ensure_topics(settings: CommonSettings, topics: Iterable[Topic] = ALL_TOPICS) -> None:
    """Create every topic (and its dead-letter topic) with its configured partition count."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        wanted: list[NewTopic] = []
        for t in topics:
            partitions = t.partitions or settings.kafka_partitions
            wanted.append(
                NewTopic(t.name(settings.kafka_topic_prefix), partitions, settings.kafka_replication_factor)
            )
            wanted.append(NewTopic(t.dlq(settings.kafka_topic_prefix), 1, settings.kafka_replication_factor))
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            response = await admin.create_topics(missing)
            failed = [
                (name, code, text)
                for name, code, text in response.topic_errors
                if code not in (0, TopicAlreadyExistsError.errno)
            ]  # 36: another process was first
            if failed:
                raise RuntimeError(f"could not create topics: {failed}")
    finally:
        await admin.close()


async def publish_events(
    broker: KafkaBroker, settings: CommonSettings, events: Sequence[Envelope], limit: int | None = None
) -> None:
    """Publish events keyed per their topic, and return only once the broker acknowledged all of them.

    Raises EventTooLarge, before anything is sent, if one of them exceeds `limit` bytes (default
    `max_event_bytes`)."""
    if acks := await hand_over(broker, settings, events, limit):
        await asyncio.gather(*acks)


async def hand_over(
    broker: KafkaBroker, settings: CommonSettings, events: Sequence[Envelope], limit: int | None = None
) -> list[Awaitable[Any]]:
    """Give events to the producer, which puts them on the log in this order (per partition, after
    those given to it before), and return the acknowledgements to wait for (`publish_events`)."""
    limit = limit or settings.max_event_bytes
    values = [event.model_dump_json().encode() for event in events]
    for event, value in zip(events, values, strict=True):
        if len(value) > limit:
            raise EventTooLarge(event, len(value), limit)
    pending = []
    for event, value in zip(events, values, strict=True):
        topic = topic_of(event).name(settings.kafka_topic_prefix)
        pending.append(
            await broker.publish(
                value,
                topic,
                key=key_of(event),
                headers={"event-type": event.type, "content-type": "application/json"},
                correlation_id=event.correlation_id or str(event.event_id),
                no_confirm=True,
            )
        )
    if settings.kafka_wake_on_work:
        bell = wake.ringer(settings.database_url, settings.kafka_wake_spacing_ms / 1000)
        for event, ack in zip(events, pending, strict=True):
            wake.ring_when_confirmed(bell, topic_of(event).name(settings.kafka_topic_prefix), ack)
    # Real Kafka hands back a delivery future per record; the in-memory test broker hands back none.
    return [p for p in pending if inspect.isawaitable(p)]


def retry_pause(settings: CommonSettings, attempt: int) -> float:
    """How long to wait before the `attempt`-th retry after infrastructure trouble: doubling, at most 30 s."""
    return min(settings.consumer_retry_backoff_s * 2 ** (attempt - 1), 30.0)


# A handler returns once its batch is handled, or returns an awaitable the batch is finished by. It
# receives Envelopes, or Logged events if it subscribed with `positions`.
Handler = Callable[[list[Any]], Awaitable[Awaitable[None] | None]]
# Records the terminal outcome of an event the handler fails on every time (like a handler's result).
Poisoned = Callable[[Envelope, BaseException], Awaitable[Awaitable[None] | None]]


async def _as_is(msg: StreamMessage[Any]) -> StreamMessage[Any]:
    """Decoder: the message itself. `subscribe` parses each record into its event once (FastStream's
    default decoder would JSON-decode every value first, for nothing) and acknowledges it itself."""
    return msg


def _event_type(record: Any) -> str | None:
    return next((v.decode() for k, v in record.headers or () if k == "event-type"), None)


class Offsets:
    """The offsets of one consumer's handled batches, committed at most every `interval_s` (0: after
    each batch). Consumers are idempotent on `event_id`, so what a crash leaves uncommitted is only
    read again; a commit per one-event batch was a broker round trip per event on the request path.
    Only offsets of batches that were finished are ever committed, never merely fetched ones; a batch
    finished later (`handled_when`) holds back the batches after it until it is."""

    def __init__(self, group: str, interval_s: float):
        self.group, self.interval_s = group, interval_s
        OFFSETS.append(self)
        self.pending: dict[TopicPartition, int] = {}
        self.unfinished: deque[tuple[asyncio.Future, Any, Sequence[Any]]] = deque()
        self.consumer: AIOKafkaConsumer | None = None
        self.last = float("-inf")  # time.monotonic() starts near 0 on a freshly booted machine
        self.later: asyncio.Task | None = None

    async def handled(self, consumer: Any, records: Sequence[Any]) -> None:
        if not isinstance(consumer, AIOKafkaConsumer):
            return  # FastStream's in-memory test broker: nothing to commit
        if self.unfinished:  # an earlier batch is still finishing: this one's offsets wait for it
            finished = asyncio.get_running_loop().create_future()
            finished.set_result(None)
            self.handled_when(finished, consumer, records)
            return
        self._mark(consumer, records)
        if self.last + self.interval_s <= time.monotonic():
            await self.commit()
        else:
            self._schedule()

    def handled_when(self, finished: Awaitable[None], consumer: Any, records: Sequence[Any]) -> None:
        """The batch of `records` is finished when `finished` completes; its offsets are committed then
        (and only after every earlier batch's)."""
        future = asyncio.ensure_future(finished)
        self.unfinished.append((future, consumer, records))
        future.add_done_callback(self._settle)

    def _settle(self, _: asyncio.Future) -> None:
        while self.unfinished and self.unfinished[0][0].done():
            future, consumer, records = self.unfinished[0]
            if future.cancelled() or future.exception() is not None:
                # Neither this batch nor any after it is committed: they are read again after a restart.
                log.error("batch not finished; its offsets stay uncommitted", group=self.group,
                          error=None if future.cancelled() else repr(future.exception()))  # fmt: skip
                return
            self.unfinished.popleft()
            self._mark(consumer, records)
        self._schedule()

    def _mark(self, consumer: AIOKafkaConsumer, records: Sequence[Any]) -> None:
        self.consumer = consumer
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            self.pending[tp] = max(self.pending.get(tp, 0), r.offset + 1)

    def _schedule(self) -> None:
        if self.pending and self.later is None:
            wait = max(self.last + self.interval_s - time.monotonic(), 0)
            self.later = asyncio.create_task(self._commit_in(wait))

    async def finish(self, timeout: float) -> None:
        """Wait (at most `timeout` s) for the batches still finishing, then commit what is finished."""
        if waiting := [future for future, _, _ in self.unfinished]:
            await asyncio.wait(waiting, timeout=timeout)
        await self.commit()

    async def _commit_in(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.later = None
        await self.commit()

    async def commit(self) -> None:
        if not self.pending or self.consumer is None:
            return
        ours = self.consumer.assignment()  # a revoked partition's events are now another member's to read
        offsets = {tp: offset for tp, offset in self.pending.items() if tp in ours}
        self.pending, self.last = {}, time.monotonic()
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:  # a rebalance is under way: try them again shortly
            log.info("offset commit failed; trying again", group=self.group, error=repr(exc))
            for tp, offset in offsets.items():
                self.pending[tp] = max(self.pending.get(tp, 0), offset)
            if self.later is None:
                self.later = asyncio.create_task(self._commit_in(min(self.interval_s, 1.0)))


OFFSETS: list[Offsets] = []  # every consumer's, so a clean stop can commit what was handled


async def commit_handled(timeout: float = 10) -> None:
    """On a clean stop, before the consumers close: let the batches still finishing finish (within
    `timeout`), and commit what was finished and not yet committed."""
    for offsets in OFFSETS:
        await offsets.finish(timeout)


def _wait_in_fetch(
    subscriber: Any, interval_ms: int, wake_on: tuple[CommonSettings, list[str]] | None
) -> None:
    """Make a batch subscriber wait for records inside aiokafka's `getmany`, which returns as soon
    as a fetch brings any. FastStream 0.7 instead polls with `batch_timeout_ms` and, after an empty
    poll, sleeps as long again: a short timeout spins (a tenth of a core per idle consumer), a long
    one delays the first event after a quiet spell. With `interval_ms`, a batch starts at least that
    long after the previous one, unless that one was full (a backlog drains at full speed); meanwhile
    aiokafka keeps fetching into its buffer, so what arrived is taken as one batch. With `wake_on`
    (settings and topic names), its fetches wait for work (services/common/wake.py)."""
    if not callable(getattr(subscriber, "get_msg", None)):
        raise RuntimeError("FastStream's batch subscriber has no get_msg(); review _wait_in_fetch")
    max_records = subscriber.max_records
    not_before = 0.0

    gated: set[int] = set()

    async def get_msg(consumer: AIOKafkaConsumer) -> tuple[Any, ...]:
        nonlocal not_before
        if wake_on is not None and id(consumer) not in gated:  # a new consumer after a restart
            gated.add(id(consumer))
            settings, names = wake_on
            wake.gate_for(
                consumer,
                settings.database_url,
                names,
                settings.kafka_idle_fetch_ms / 1000,
                settings.kafka_wake_linger_ms / 1000,
            )
        if (pause := not_before - time.monotonic()) > 0:
            await asyncio.sleep(pause)
        fetched = await consumer.getmany(timeout_ms=2000, max_records=max_records)
        batch = tuple(record for records in fetched.values() for record in records)
        full = len(batch) >= max_records
        not_before = 0.0 if full else time.monotonic() + interval_ms / 1000
        return batch

    subscriber.get_msg = get_msg


LISTENERS: list[LogRebalance] = []  # every consumer of this process, for readiness
STARTS_AT_END: list[tuple[str, list[str]]] = []  # (group id, topics) of the groups that start at the end


async def anchor_groups(settings: CommonSettings) -> None:
    """Before consuming: commit the current end of every partition a start-at-the-end group has no
    committed offset for. Such a group then starts at the end only the first time it exists; after a
    restart it resumes where it was, even on partitions it never read from. (Leaving it to the
    consumer's own reset raced with its first fetch.) If the group is already running elsewhere, its
    members have done this, and the commit is refused: nothing to do."""
    for group_id, topic_names in STARTS_AT_END:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers, group_id=group_id, enable_auto_commit=False
        )
        await consumer.start()
        try:
            await consumer.topics()  # refresh metadata so the partitions are known
            partitions = [
                TopicPartition(t, p)
                for t in topic_names
                for p in sorted(consumer.partitions_for_topic(t) or ())
            ]
            consumer.assign(partitions)
            new = [tp for tp in partitions if await consumer.committed(tp) is None]
            if new:
                ends = await consumer.end_offsets(new)
                await consumer.commit(ends)
                log.info(
                    "group anchored at the end of the log",
                    group=group_id,
                    positions={f"{tp.topic}:{tp.partition}": o for tp, o in ends.items()},
                )
        except KafkaError as exc:
            log.info("group not anchored: it is running elsewhere", group=group_id, error=repr(exc))
        finally:
            await consumer.stop()


class Owner(Protocol):
    """Work owned by partition (services/mailsync): told what its consumer now holds, and what it lost."""

    async def assigned(self, partitions: set[TopicPartition]) -> None: ...
    async def revoked(self, partitions: set[TopicPartition]) -> None: ...


class LogRebalance(ConsumerRebalanceListener):
    """Log every partition assignment and revocation: a rebalance pauses the whole group."""

    def __init__(self, group: str, offsets: Offsets | None = None, owner: Owner | None = None):
        self.group, self.offsets, self.owner = group, offsets, owner
        self.joined = False  # a first assignment (possibly empty) has completed
        LISTENERS.append(self)

    async def on_partitions_revoked(self, revoked) -> None:
        if self.offsets:  # still a member here: hand over what was handled
            await self.offsets.commit()
        if self.owner:
            await self.owner.revoked(set(revoked))
        if revoked:
            log.info(
                "partitions revoked",
                group=self.group,
                partitions=sorted(f"{p.topic}:{p.partition}" for p in revoked),
            )

    async def on_partitions_assigned(self, assigned) -> None:
        log.info(
            "partitions assigned",
            group=self.group,
            partitions=sorted(f"{p.topic}:{p.partition}" for p in assigned),
        )
        if self.owner:
            await self.owner.assigned(set(assigned))
        self.joined = True


def consumers_joined() -> bool:
    """Every consumer of this process has joined its group (readiness: it is now reading the log)."""
    return all(listener.joined for listener in LISTENERS)


@contextlib.contextmanager
def bound(event: Envelope) -> Iterator[None]:
    """Bind an event's ids into the log context (every log line of its handling carries them)."""
    mid = message_id_of(event)
    with structlog.contextvars.bound_contextvars(
        event_id=str(event.event_id),
        event_type=event.type,
        correlation_id=event.correlation_id,
        message_id=str(mid) if mid else None,
    ):
        yield


@dataclass(frozen=True)
class Logged:
    """An event with where it was read: what a `positions` consumer receives (projections/archive.py)."""

    event: Envelope
    topic: str
    partition: int
    offset: int


class Consumer:
    """One consumer's handling of a batch of records (what `subscribe` wires to the broker): parse,
    hand the events to the handler, and make every failure one of two kinds. Infrastructure trouble
    raises (after a growing pause) so that the whole batch is rewound and delivered again; anything
    else is one event's problem: the batch is retried event by event, each failing event up to
    `consumer_max_attempts` times in place, then settled by `on_poison` or parked, once, on its topic's
    dead-letter topic (`publish`), and the partition moves on. Driven by unit tests with plain records
    (tests/unit/test_consumer.py)."""

    def __init__(
        self,
        handler: Handler,
        settings: CommonSettings,
        topics: Sequence[Topic],
        group: str,
        publish: Callable[..., Awaitable[Any]],
        *,
        only: Collection[str] | None = None,
        on_poison: Poisoned | None = None,
        positions: bool = False,
    ):
        self.handler, self.settings, self.topics, self.group = handler, settings, topics, group
        self.publish, self.only, self.on_poison, self.positions = publish, only, on_poison, positions
        self.prefix = settings.kafka_topic_prefix
        self.progress = Progress(f"consumer {group}")
        self.pauses = 0  # consecutive batches redelivered after infrastructure trouble
        # Records parked already (topic, partition, offset): a batch redelivered after infrastructure
        # trouble passes over them instead of parking them again.
        self.parked: OrderedDict[tuple[str, int, int], None] = OrderedDict()

    async def handle(self, records: list[Any]) -> Awaitable[None] | None:
        """Handle the batch; returns what it is finished by, if the handler finishes it later. Only
        infrastructure trouble raises (the batch is then rewound and delivered again)."""
        parsed: list[tuple[Any, Envelope]] = []
        for record in records:
            if (record.topic, record.partition, record.offset) in self.parked:
                continue
            if self.only is not None and (kind := _event_type(record)) is not None and kind not in self.only:
                continue
            try:
                parsed.append((record, parse_event(record.value)))
            except ValidationError as exc:
                await self.park(record, exc)
        if not parsed:
            return None
        started = time.perf_counter()
        try:
            later = await self.call(parsed)
        except Exception as exc:
            if is_transient(exc):
                await self.transient(exc)
                raise
            self.progress.failed(exc)
            log.warning("batch failed; retrying its events one by one", size=len(parsed), exc_info=True)
            return await self.one_by_one(parsed)
        self.pauses = 0
        self.progress.moved()
        EVENTS.labels(self.group).inc(len(parsed))
        BATCH_SECONDS.labels(self.group).observe(time.perf_counter() - started)
        log.debug(
            "batch handled",
            group=self.group,
            size=len(parsed),
            ms=round((time.perf_counter() - started) * 1000, 2),
        )
        return later

    def call(self, parsed: list[tuple[Any, Envelope]]) -> Awaitable[Awaitable[None] | None]:
        if self.positions:
            return self.handler([Logged(e, r.topic, r.partition, r.offset) for r, e in parsed])
        return self.handler([e for _, e in parsed])

    async def one_by_one(self, parsed: list[tuple[Any, Envelope]]) -> Awaitable[None] | None:
        attempts, laters = self.settings.consumer_max_attempts, []
        for record, event in parsed:
            with bound(event):
                for attempt in range(1, attempts + 1):
                    try:
                        if (later := await self.call([(record, event)])) is not None:
                            laters.append(later)
                        EVENTS.labels(self.group).inc()
                        break
                    except Exception as exc:
                        if is_transient(exc):
                            await self.transient(exc)
                            raise
                        if attempt < attempts and not is_content_error(exc):
                            RETRIES.labels(self.group, "event").inc()
                            log.warning("event failed, trying again", attempt=attempt, exc_info=exc)
                            await asyncio.sleep(self.settings.consumer_retry_backoff_s)
                            continue
                        log.error("event failed on every attempt", attempts=attempt, exc_info=exc)
                        if (later := await self.poisoned(record, event, exc)) is not None:
                            laters.append(later)
        self.progress.moved()  # the partition moves on
        return asyncio.gather(*laters) if laters else None

    async def poisoned(self, record: Any, event: Envelope, exc: BaseException) -> Awaitable[None] | None:
        """An event that failed on every attempt: the handler's own terminal outcome for it (a rejected
        or failed message the client hears of), or else the dead-letter topic."""
        if self.on_poison is not None:
            try:
                return await self.on_poison(event, exc)
            except Exception as error:
                if is_transient(error):
                    raise
                log.error("no outcome could be recorded for the event; parking it", exc_info=error)
        await self.park(record, exc)
        return None

    async def park(self, record: Any, error: BaseException) -> None:
        source = next(t for t in self.topics if t.name(self.prefix) == record.topic)
        await self.publish(
            record.value,
            source.dlq(self.prefix),
            key=record.key,
            headers={
                "dlq-topic": record.topic,
                "dlq-partition": str(record.partition),
                "dlq-offset": str(record.offset),
                "dlq-group": self.group,
                "dlq-error": f"{type(error).__name__}: {error}"[:1000],
            },
        )
        PARKED.labels(self.group).inc()
        self.parked[(record.topic, record.partition, record.offset)] = None
        while len(self.parked) > 10_000:
            self.parked.popitem(last=False)
        log.error("event parked on dead-letter topic", topic=record.topic, offset=record.offset, error=str(error))

    async def transient(self, exc: BaseException) -> None:
        """Infrastructure trouble: pause, growing, then the batch is delivered again (the caller raises)."""
        self.pauses += 1
        self.progress.failed(exc)
        RETRIES.labels(self.group, "infrastructure").inc()
        pause = retry_pause(self.settings, self.pauses)
        log.warning(
            "infrastructure error, batch will be redelivered", attempt=self.pauses, pause_s=pause, error=repr(exc)
        )
        await asyncio.sleep(pause)


def subscribe(
    broker: KafkaBroker,
    settings: CommonSettings,
    topics: Sequence[Topic],
    group: str,
    *,
    path: Literal["sync", "background", "trailing"] = "background",
    offset_reset: Literal["earliest", "latest"] = "earliest",
    only: Collection[str] | None = None,
    on_poison: Poisoned | None = None,
    owner: Owner | None = None,
    positions: bool = False,
) -> Callable[[Handler], Handler]:
    """Declare a batch consumer of `topics` in consumer group `group` (see the module docstring).

    The handler receives the parsed events of one fetch, in partition order; the batch's offsets are
    committed only once it is finished: when the handler returns, or, if it returns an awaitable,
    when that completes. With `only`, records whose `event-type` header names another type
    are passed over unparsed (a record without the header is parsed). Failures are handled by
    `Consumer` (above); `on_poison` records the terminal outcome of an event that failed on every
    attempt (the message is rejected or failed, visibly), and an event it cannot settle either is
    parked. An `owner` hears of every partition assigned to and revoked from this consumer. With
    `positions`, the handler receives each event as a `Logged`, with its topic, partition and offset.
    `path` says what waits on this consumer, which sets its fetch wait and how often it takes a batch:
    an HTTP request ("sync"), a delivery or a read ("background"), or nothing at once ("trailing": the
    webhooks fan-out).
    """
    prefix = settings.kafka_topic_prefix
    fetch_wait = (
        settings.kafka_fetch_max_wait_ms_sync
        if path == "sync"
        else settings.kafka_fetch_max_wait_ms_background
    )

    def decorator(handler: Handler) -> Handler:
        consumer = Consumer(
            handler, settings, topics, group, broker.publish, only=only, on_poison=on_poison, positions=positions
        )
        offsets = Offsets(group, settings.kafka_commit_interval_ms / 1000)
        if offset_reset == "latest":
            STARTS_AT_END.append((f"{prefix}.{group}", [t.name(prefix) for t in topics]))
        subscriber = broker.subscriber(
            *[t.name(prefix) for t in topics],
            group_id=f"{prefix}.{group}",  # deployments sharing a cluster (or a test run) never share groups
            batch=True,
            max_records=settings.kafka_max_records,
            ack_policy=AckPolicy.MANUAL,  # see `consume`
            auto_offset_reset=offset_reset,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
            rebalance_timeout_ms=settings.kafka_rebalance_timeout_ms,
            fetch_max_wait_ms=fetch_wait,
            # aiokafka's fetch loop wakes on every fetch, consumption and (re)assignment anyway; its
            # timeout (200 ms by default) only makes an idle consumer spin.
            consumer_timeout_ms=1000,
            listener=LogRebalance(group, offsets, owner),
            decoder=_as_is,
            title=f"{group}:{handler.__name__}",
            description=handler.__doc__,
        )
        _wait_in_fetch(
            subscriber,
            {
                "sync": settings.kafka_batch_interval_ms_sync,
                "background": settings.kafka_batch_interval_ms_background,
                "trailing": settings.kafka_batch_interval_ms_trailing,
            }[path],
            (settings, [t.name(prefix) for t in topics]) if settings.kafka_wake_on_work else None,
        )

        @subscriber
        async def consume(msg: StreamMessage[Any]) -> None:
            raw = msg.raw_message
            records = list(raw) if isinstance(raw, list | tuple) else [raw]
            try:
                later = await consumer.handle(records)
            except Exception:
                await msg.nack()  # rewind each partition to the batch's first record: all of it comes again
                raise
            kafka = getattr(msg, "consumer", None)
            if later is None:
                await offsets.handled(kafka, records)
            elif isinstance(kafka, AIOKafkaConsumer):
                offsets.handled_when(later, kafka, records)
            else:  # FastStream's in-memory test broker: no offsets; the batch is done once finished
                await later

        return handler

    return decorator
