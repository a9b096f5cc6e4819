"""Which mailboxes a sync worker keeps sessions for (services/mailsync/app.py: Sync). The consumer's
rebalance listener only records what the group assigned or revoked and returns at once, whatever
PostgreSQL is doing: a listener that waited on I/O held the whole group's rebalance up. The sessions
are brought in line afterwards, and again until PostgreSQL answers."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import TopicPartition

from devstack.infra import free_port
from schemas import topics
from services.common.secrets import Secrets, new_key
from services.common.settings import MailsyncSettings
from services.mailsync import app
from services.mailsync.app import Sync

PARTITIONS = 3


class Database:
    """Stands in for the pool: its first `failures` reads fail as a lost connection does; then it lists
    the IMAP accounts in `rows`. Writes (a session's sync state) are taken."""

    def __init__(self, rows: list[dict], failures: int):
        self.rows, self.failures, self.reads = rows, failures, 0

    async def fetch(self, query: str, *args) -> list[dict]:
        self.reads += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionRefusedError("PostgreSQL is restarting")
        return [r for r in self.rows if not args or r["id"] in args[0]]

    async def execute(self, *args) -> str:
        return "UPDATE 1"


def account(secrets: Secrets, port: int) -> dict:
    return {
        "id": uuid.uuid4(), "org_id": uuid.uuid4(), "identity_id": uuid.uuid4(), "dialect": "identities",
        "email": "pool@tryacme.test", "imap_host": "127.0.0.1", "imap_port": port, "imap_tls": "none",
        "imap_username": "pool@tryacme.test", "imap_password": secrets.seal("pw"),
    }  # fmt: skip


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> MailsyncSettings:
    async def partition_count(_settings) -> int:
        return PARTITIONS

    monkeypatch.setattr(app, "partition_count", partition_count)
    return MailsyncSettings(
        secret_keys=[new_key()], mailsync_retry_delays_s=[0.05], egress_allowed_networks=["127.0.0.0/8"]
    )


async def eventually(check, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def test_the_listener_returns_at_once_and_the_sessions_come_up_once_postgresql_answers(
    settings: MailsyncSettings,
) -> None:
    secrets = Secrets(settings.secret_keys)
    rows = [account(secrets, free_port()) for _ in range(6)]  # nothing listens there: sessions retry
    database = Database(rows, failures=3)
    sync = Sync(settings, database, broker=None)  # type: ignore[arg-type]
    await sync.start()
    try:
        topic = topics.MAILSYNC.name(settings.kafka_topic_prefix)
        everything = {TopicPartition(topic, p) for p in range(PARTITIONS)}
        await asyncio.wait_for(sync.assigned(everything), 0.005)  # no I/O in the listener
        assert not sync.sessions
        await eventually(lambda: len(sync.sessions) == len(rows))
        assert database.reads == 4  # three failed, each tried again

        lost = {p for p in range(PARTITIONS) if p != sync.partition_of(rows[0]["id"])}
        await asyncio.wait_for(sync.revoked({TopicPartition(topic, p) for p in lost}), 0.005)
        assert all(sync.partition_of(m) not in lost for m in sync.sessions)  # ended at once
        assert rows[0]["id"] in sync.sessions

        before = sync.sessions[rows[0]["id"]]
        database.rows = rows[1:]  # its IMAP account was removed
        await asyncio.wait_for(sync.changed({rows[0]["id"]}), 0.005)
        await eventually(before.done)
        assert rows[0]["id"] not in sync.sessions
    finally:
        await sync.stop()
    assert not sync.sessions
