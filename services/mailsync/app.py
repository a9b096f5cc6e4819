"""Mailbox sync: the mail of pool mailboxes, read back from their provider over IMAP (services/mailsync/
session.py) into the same intake as mail received over SMTP.

Which worker reads which mailbox is Kafka's to say, not ours: each mailbox's facts travel on the
`mailsync` topic keyed by mailbox, and a worker keeps a session for every mailbox (with an IMAP
account, in PostgreSQL) whose key maps to a partition its consumer group assigned it. Workers added
to the group take a share of the mailboxes; a worker that dies loses its partitions when its session
times out, and the others take its mailboxes up from their checkpoints. A fact (IMAP account set,
changed or removed) restarts or stops the mailbox's session on the worker that owns it.
"""

from __future__ import annotations

import asyncio
import os
import socket
from uuid import UUID

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from faststream.kafka import KafkaBroker
from prometheus_client import Gauge

from schemas import topics
from schemas.envelope import Envelope
from schemas.events import MailboxSyncChanged
from services.common import service
from services.common.broker import subscribe
from services.common.domain.blobs import blob_store
from services.common.domain.receiving.intake import Intake
from services.common.secrets import Secrets
from services.common.service import cancel
from services.common.settings import MailsyncSettings
from services.mailsync.session import Session, accounts

log = structlog.get_logger("sendstream.mailsync")
SESSIONS = Gauge("sendstream_mailsync_sessions", "Mailboxes this worker keeps an IMAP session for")
GROUP = "mailsync"


async def partition_count(settings: MailsyncSettings) -> int:
    """How many partitions the mailsync topic has (what a mailbox's key is hashed over)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        await consumer.topics()
        return len(consumer.partitions_for_topic(topics.MAILSYNC.name(settings.kafka_topic_prefix)) or ())
    finally:
        await consumer.stop()


class Sync:
    """The sessions of the mailboxes this worker owns.

    The consumer's rebalance listener and the facts only say what changed (`assigned`, `revoked`,
    `changed`); one task brings the sessions in line with it (`reconcile`), and tries again if
    PostgreSQL or the broker fails it. A listener that waited on I/O held the whole group's rebalance
    up: under a short rebalance timeout its members were dropped and rejoined over and over, and a
    worker starting meanwhile never got its assignment (nor became ready)."""

    def __init__(self, settings: MailsyncSettings, pool: asyncpg.Pool, broker: KafkaBroker):
        self.settings, self.pool = settings, pool
        self.secrets = Secrets(settings.secret_keys)
        self.blobs = blob_store(settings, pool)
        self.intake = Intake(settings, pool, broker, self.blobs)
        self.worker = settings.mailsync_worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.topic = topics.MAILSYNC.name(settings.kafka_topic_prefix)
        self.partitions: int | None = None
        self.owned: set[int] | None = None  # None until the group first assigned this worker
        self.sessions: dict[UUID, asyncio.Task] = {}
        self.rebalanced = False  # every session is to be checked against what this worker owns
        self.restart: set[UUID] = set()  # mailboxes whose IMAP account changed
        self.due = asyncio.Event()
        self.task: asyncio.Task | None = None

    def partition_of(self, mailbox_id: UUID) -> int:
        assert self.partitions
        return DefaultPartitioner()(str(mailbox_id).encode(), list(range(self.partitions)), None)

    async def start(self) -> None:
        await self.blobs.start()
        self.task = asyncio.create_task(self._follow(), name="mailsync:reconcile")

    async def stop(self) -> None:
        await cancel(self.task)
        await self.drop(set(self.sessions))
        await self.blobs.stop()

    # --- what changed (the consumer's rebalance listener, and the facts): no I/O ---------------------

    async def assigned(self, partitions: set[TopicPartition]) -> None:
        self.owned = {tp.partition for tp in partitions if tp.topic == self.topic}
        self.rebalanced = True
        self.due.set()

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        lost = {tp.partition for tp in partitions if tp.topic == self.topic}
        if self.owned is not None:
            self.owned -= lost
        if lost and self.partitions:  # another worker takes these up: their sessions end now
            self.end_outside(self.owned or set())

    async def changed(self, mailbox_ids: set[UUID]) -> None:
        """These mailboxes' IMAP accounts changed: their sessions start over with what is stored now."""
        self.restart |= mailbox_ids
        self.due.set()

    # --- the sessions brought in line ----------------------------------------------------------------

    async def _follow(self) -> None:
        delays = self.settings.mailsync_retry_delays_s
        failures = 0
        while True:
            await self.due.wait()
            self.due.clear()
            try:
                await self.reconcile()
                failures = 0
            except Exception:
                log.exception("mailbox sessions not brought in line; trying again", attempt=failures + 1)
                self.due.set()
                await asyncio.sleep(delays[min(failures, len(delays) - 1)])
                failures += 1

    async def reconcile(self) -> None:
        """Start the sessions of owned mailboxes that have none, restart those whose account changed,
        and end those of mailboxes no longer owned or no longer synced."""
        if self.owned is None:
            return
        if self.partitions is None:
            self.partitions = await partition_count(self.settings)
        everything, restart = self.rebalanced, self.restart
        self.rebalanced, self.restart = False, set()
        try:
            found = await accounts(self.pool, self.secrets, None if everything else list(restart))
        except BaseException:
            self.rebalanced, self.restart = self.rebalanced or everything, self.restart | restart
            raise
        listed = {a.target.mailbox_id for a in found}
        ended = restart | (set(self.sessions) - listed if everything else set())
        await self.drop(ended & set(self.sessions))
        owned = self.owned  # as it is now, after the awaits: a revocation meanwhile counts
        for account in found:
            mailbox_id = account.target.mailbox_id
            if mailbox_id not in self.sessions and self.partition_of(mailbox_id) in owned:
                self.begin(account)
        self.end_outside(owned)
        log.info(
            "mailbox sessions in line",
            worker=self.worker,
            partitions=sorted(owned),
            mailboxes=len(self.sessions),
        )

    def end_outside(self, owned: set[int]) -> None:
        """Cancel, without waiting, the sessions of mailboxes whose partition is not in `owned`."""
        for mailbox_id in [m for m in self.sessions if self.partition_of(m) not in owned]:
            self.sessions.pop(mailbox_id).cancel()
        SESSIONS.set(len(self.sessions))

    def begin(self, account) -> None:
        session = Session(account, self.settings, self.pool, self.intake, self.worker)
        self.sessions[account.target.mailbox_id] = asyncio.create_task(
            session.run(), name=f"mailsync:{account.target.mailbox_id}"
        )
        SESSIONS.set(len(self.sessions))

    async def drop(self, mailbox_ids: set[UUID]) -> None:
        await asyncio.gather(*(cancel(self.sessions.pop(m, None)) for m in mailbox_ids))
        SESSIONS.set(len(self.sessions))


def build(broker: KafkaBroker, settings: MailsyncSettings, pool: asyncpg.Pool) -> Sync:
    sync = Sync(settings, pool, broker)

    @subscribe(broker, settings, [topics.MAILSYNC], group=GROUP, owner=sync)
    async def on_facts(events: list[Envelope]) -> None:
        """(Re)start or stop the sessions of the mailboxes whose IMAP account changed."""
        await sync.changed({e.payload.mailbox_id for e in events if isinstance(e, MailboxSyncChanged)})

    return sync


def main() -> None:
    service.main("mailsync", MailsyncSettings(), build)
