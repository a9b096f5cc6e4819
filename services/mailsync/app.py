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
from services.common.blobs import blob_store
from services.common.broker import subscribe
from services.common.receiving.intake import Intake
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
    """The sessions of the mailboxes this worker owns."""

    def __init__(self, settings: MailsyncSettings, pool: asyncpg.Pool, broker: KafkaBroker):
        self.settings, self.pool = settings, pool
        self.secrets = Secrets(settings.secret_keys)
        self.blobs = blob_store(settings, pool)
        self.intake = Intake(settings, pool, broker, self.blobs)
        self.worker = settings.mailsync_worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.topic = topics.MAILSYNC.name(settings.kafka_topic_prefix)
        self.partitions: int | None = None
        self.owned: set[int] = set()
        self.sessions: dict[UUID, asyncio.Task] = {}
        self.lock = asyncio.Lock()  # rebalances and facts change the sessions one at a time

    def partition_of(self, mailbox_id: UUID) -> int:
        assert self.partitions
        return DefaultPartitioner()(str(mailbox_id).encode(), list(range(self.partitions)), None)

    async def start(self) -> None:
        await self.blobs.start()

    async def stop(self) -> None:
        async with self.lock:
            await self.drop(set(self.sessions))
        await self.blobs.stop()

    # --- ownership (the consumer's rebalance listener) -------------------------------------------

    async def assigned(self, partitions: set[TopicPartition]) -> None:
        async with self.lock:
            if self.partitions is None:
                self.partitions = await partition_count(self.settings)
            self.owned = {tp.partition for tp in partitions if tp.topic == self.topic}
            mine = [
                a
                for a in await accounts(self.pool, self.secrets)
                if self.partition_of(a.target.mailbox_id) in self.owned
            ]
            await self.drop({m for m in self.sessions if m not in {a.target.mailbox_id for a in mine}})
            for account in mine:
                if account.target.mailbox_id not in self.sessions:
                    self.begin(account)
            log.info(
                "mailboxes owned",
                worker=self.worker,
                partitions=sorted(self.owned),
                mailboxes=len(self.sessions),
            )

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        async with self.lock:
            self.owned -= {tp.partition for tp in partitions if tp.topic == self.topic}
            await self.drop({m for m in self.sessions if self.partition_of(m) not in self.owned})

    # --- facts --------------------------------------------------------------------------------------

    async def changed(self, mailbox_ids: set[UUID]) -> None:
        """These mailboxes' IMAP accounts changed: their sessions start over with what is stored now."""
        async with self.lock:
            await self.drop(mailbox_ids & set(self.sessions))
            for account in await accounts(self.pool, self.secrets, list(mailbox_ids)):
                if self.partitions and self.partition_of(account.target.mailbox_id) in self.owned:
                    self.begin(account)

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
