"""The decide consumer: in-memory broker, real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker

from schemas import topics
from schemas.events import (
    ArrivedMessage,
    BlobRef,
    Content,
    MessageArrived,
    MessageArrivedPayload,
    MessageReceived,
    RequestedMessage,
    SendAccepted,
    SendRequested,
    SendRequestedPayload,
    parse_event,
)
from schemas.ids import new_id
from services.common.broker import make_broker
from services.common.settings import DecideSettings
from services.decide.app import DurablePublisher, build, decide_batch, decide_fresh

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def seed_identity(db: asyncpg.Pool, cap: int = 5) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    org, idn, acc = new_id(), new_id(), new_id()
    await db.execute("INSERT INTO organizations (id, name) VALUES ($1, 'o')", org)
    await db.execute(
        "INSERT INTO identities (id, org_id, handle, daily_cap, timezone) VALUES ($1, $2, $3, $4, 'UTC')",
        idn,
        org,
        f"{idn.hex}@example.test",
        cap,
    )
    await db.execute(
        """INSERT INTO mailboxes (id, org_id, identity_id, email, smtp_host, smtp_port, smtp_tls, hourly_limit)
           VALUES ($1, $2, $3, 's@tryacme.test', '127.0.0.1', 25, 'none', 600)""",
        acc,
        org,
        idn,
    )
    return org, idn, acc


def decide_with_probe(db: asyncpg.Pool, service_env: dict) -> tuple[KafkaBroker, str, list, DecideSettings]:
    """The decide consumer on an in-memory broker with its own topics, the decisions it publishes, and
    its settings."""
    prefix = f"u{uuid.uuid4().hex[:6]}"
    settings = DecideSettings(database_url=service_env["DATABASE_URL"], kafka_topic_prefix=prefix)
    broker = make_broker(settings, "test")
    build(broker, settings, db)
    seen: list = []

    @broker.subscriber(topics.DECISIONS.name(prefix), group_id="probe")
    async def probe(body: dict) -> None:  # our broker hands handlers the decoded body as it is
        seen.append(parse_event(json.dumps(body)))

    return broker, topics.REQUESTS.name(prefix), seen, settings


def send_request(org: uuid.UUID, identity: uuid.UUID, to: str) -> bytes:
    return (
        SendRequested(
            org_id=org,
            identity_id=identity,
            payload=SendRequestedPayload(
                handle="h@example.test",
                messages=[RequestedMessage(message_id=new_id(), conv_id=new_id(), to=to)],
                content=Content(subject="s", text="t"),
            ),
        )
        .model_dump_json()
        .encode()
    )


async def test_redelivered_request_republishes_the_same_decision(db: asyncpg.Pool, service_env: dict) -> None:
    """A request delivered twice is decided once: same decision event_id, the cap charged once."""
    broker, topic, seen, _ = decide_with_probe(db, service_env)
    org, idn, acc = await seed_identity(db)
    request = send_request(org, idn, "m@x.test")
    async with TestKafkaBroker(broker) as br:
        for _ in range(2):
            await br.publish(request, topic, key=str(idn).encode())
    assert len(seen) == 2 and seen[0] == seen[1]
    assert isinstance(seen[0], SendAccepted)
    assert seen[0].payload.mailbox_id == acc and seen[0].payload.remaining == 4
    assert await db.fetchval("SELECT sent FROM identity_usage WHERE identity_id = $1", idn) == 1
    assert await db.fetchval("SELECT sum(sent) FROM mailbox_minutes WHERE mailbox_id = $1", acc) == 1
    assert await db.fetchval("SELECT sent FROM mailbox_days WHERE mailbox_id = $1", acc) == 1


async def test_a_batch_mixing_decided_and_new_requests_counts_each_once(
    db: asyncpg.Pool, service_env: dict
) -> None:
    """The one-statement fast path undoes itself when a request was decided before; nothing is counted twice."""
    broker, topic, seen, _ = decide_with_probe(db, service_env)
    org, idn, _ = await seed_identity(db)
    first, second = send_request(org, idn, "a@x.test"), send_request(org, idn, "b@x.test")
    async with TestKafkaBroker(broker) as br:
        await br.publish(first, topic, key=str(idn).encode())
        await br.publish_batch(first, second, topic=topic)
    assert [d.payload.to for d in seen] == [["a@x.test"], ["a@x.test"], ["b@x.test"]]
    assert seen[0] == seen[1]
    assert [d.payload.remaining for d in seen] == [4, 4, 3]
    assert await db.fetchval("SELECT sent FROM identity_usage WHERE identity_id = $1", idn) == 2
    unfinished = "SELECT count(*) FROM processed_events WHERE consumer = 'decide' AND outputs IS NULL"
    assert await db.fetchval(unfinished) == 0


async def test_decisions_a_database_crash_lost_are_recorded_again_as_answered(
    db: asyncpg.Pool, service_env: dict
) -> None:
    """decide's write does not wait for the WAL flush (the ingress answers from it at once); a crash of
    the database before the flush loses the record and the state it changed. The publisher makes the
    decisions durable before publishing them, and records lost ones again, as they were answered."""
    broker, _, seen, settings = decide_with_probe(db, service_env)
    publisher = DurablePublisher(broker, settings, db)
    org, idn, acc = await seed_identity(db)
    request = parse_event(send_request(org, idn, "Lead@x.test"))
    async with TestKafkaBroker(broker):
        batch = await decide_batch(db, [request], datetime.now(UTC))
        [answered] = batch.decisions
        # What a crash before the flush leaves: neither the decision's record nor the state it changed.
        await db.execute(
            "DELETE FROM processed_events WHERE consumer = 'decide' AND event_id = $1", request.event_id
        )
        for table in ("identity_usage", "affinity"):
            await db.execute(f"DELETE FROM {table} WHERE identity_id = $1", idn)
        await db.execute("DELETE FROM mailbox_days WHERE mailbox_id = $1", acc)
        await asyncio.wait_for(await publisher.submit(batch), 10)
        await publisher.stop()
    assert seen == [answered]  # published as the ingress answered it
    recorded = await db.fetchval(
        "SELECT outputs FROM processed_events WHERE consumer = 'decide' AND event_id = $1", request.event_id
    )
    assert [parse_event(json.dumps(o)) for o in recorded] == [answered]
    assert await db.fetchval("SELECT sent FROM identity_usage WHERE identity_id = $1", idn) == 1
    assert await db.fetchval("SELECT sent FROM mailbox_days WHERE mailbox_id = $1", acc) == 1
    assert (
        await db.fetchval(
            "SELECT mailbox_id FROM affinity WHERE identity_id = $1 AND recipient = 'lead@x.test'", idn
        )
        == acc
    )
    # watched until it is sent, and what it goes to kept, once recorded again
    message_id = answered.payload.message_id
    assert await db.fetchval("SELECT count(*) FROM redrives WHERE message_id = $1", message_id) == 1
    assert await db.fetchval("SELECT count(*) FROM sent_recipients WHERE message_id = $1", message_id) == 1


def arrival(
    org: uuid.UUID, identity: uuid.UUID, mailbox: uuid.UUID, rfc_id: str, answers: str | None
) -> MessageArrived:
    """Mail for the identity as the intake hands it over: a conversation of its own (it found none)."""
    content = Content(
        subject="Re: Intro", text="More.", in_reply_to=answers, references=[answers] if answers else []
    )
    message = ArrivedMessage(message_id=new_id(), rfc_message_id=rfc_id, from_addr="lead@example.test",
                             to=["s@tryacme.test"], recipients=["s@tryacme.test"], content=content,
                             raw=BlobRef(sha256="0" * 64, size=1, content_type="message/rfc822"))  # fmt: skip
    return MessageArrived(org_id=org, identity_id=identity,
                          payload=MessageArrivedPayload(message=message, conv_id=new_id(), mailbox_id=mailbox))  # fmt: skip


async def test_mail_answering_mail_that_arrived_just_before_it_joins_that_conversation(
    db: asyncpg.Pool,
) -> None:
    """A chain read from a mailbox's backlog arrives faster than threads are written: decide, seeing an
    identity's arrivals in order, threads each onto the one before it, also within one batch."""
    org, idn, acc = await seed_identity(db)
    chain = [arrival(org, idn, acc, "<m0@example.test>", None)]
    for i in range(1, 5):
        chain.append(arrival(org, idn, acc, f"<m{i}@example.test>", f"<m{i - 1}@example.test>"))
    decided, _ = await decide_fresh(db, chain, datetime.now(UTC))
    received = [d for e in chain for d in decided[e.event_id] if isinstance(d, MessageReceived)]
    assert [r.payload.conv_id for r in received] == [chain[0].payload.conv_id] * 5
    assert [r.payload.new_conversation for r in received] == [True, False, False, False, False]


async def test_each_accepted_send_has_its_recipients_and_mailbox_recorded_before_it_is_published(
    db: asyncpg.Pool, service_env: dict
) -> None:
    """A report about a message is checked against what it was sent to, and may come back before the
    views have the message: decide's publisher records that before dispatch can see the decision."""
    broker, topic, seen, settings = decide_with_probe(db, service_env)
    recorded_when_published: list = []

    @broker.subscriber(topics.DECISIONS.name(settings.kafka_topic_prefix), group_id="dispatch-probe")
    async def dispatch_probe(body: dict) -> None:
        accepted = parse_event(json.dumps(body))
        recorded_when_published.append(
            await db.fetchrow(
                "SELECT * FROM sent_recipients WHERE message_id = $1", accepted.payload.message_id
            )
        )

    org, idn, acc = await seed_identity(db)
    request = SendRequested(
        org_id=org, identity_id=idn,
        payload=SendRequestedPayload(
            handle="h@example.test",
            messages=[RequestedMessage(message_id=new_id(), conv_id=new_id(), to="Ana@X.test")],
            content=Content(subject="s", text="t", cc=["cc@x.test"], bcc=["BCC@x.test"]),
        ),
    )  # fmt: skip
    async with TestKafkaBroker(broker) as br:
        await br.publish(request.model_dump_json().encode(), topic, key=str(idn).encode())
    [accepted] = seen
    [row] = recorded_when_published
    assert row is not None, "the decision was published before its recipients were recorded"
    assert (row["org_id"], row["identity_id"], row["mailbox_id"], row["mailbox_email"]) == (
        org, idn, acc, "s@tryacme.test"
    )  # fmt: skip
    assert row["rfc_message_id"] == accepted.payload.rfc_message_id
    assert row["recipients"] == ["ana@x.test", "cc@x.test", "bcc@x.test"]
