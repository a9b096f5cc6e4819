"""The re-drive record (services/common/domain/redrive.py) on real PostgreSQL: what is overdue is handed back,
each time later; the loss of the log makes what was in flight overdue at once; an end settles it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from projections.app import project
from schemas.events import (
    Content,
    DispatchRetryDue,
    DispatchRetryDuePayload,
    MessageSent,
    MessageSentPayload,
    RequestedMessage,
    SendAccepted,
    SendAcceptedPayload,
    SendRequested,
    SendRequestedPayload,
    SmtpReply,
)
from schemas.ids import new_id
from services.common.domain import redrive
from services.common.domain.decided import DECIDER

pytestmark = pytest.mark.asyncio(loop_scope="session")


def accepted() -> SendAccepted:
    return SendAccepted(org_id=new_id(), identity_id=new_id(), payload=SendAcceptedPayload(
        message_id=new_id(), conv_id=new_id(), mailbox_id=new_id(), mailbox_email="s@x.test", affinity="new",
        rfc_message_id="<a@x.test>", from_addr="s@x.test", to=["m@x.test"], content=Content(subject="s", text="t"),
        daily_cap=10, remaining=9))  # fmt: skip


async def due_of(db: asyncpg.Pool | asyncpg.Connection, message_id) -> tuple[datetime, int] | None:
    row = await db.fetchrow("SELECT due_at, attempts FROM redrives WHERE message_id = $1", message_id)
    return (row["due_at"], row["attempts"]) if row else None


async def take(db: asyncpg.Pool, after_s: float) -> list:
    async with db.acquire() as conn, conn.transaction():
        return await redrive.redrive_due(conn, after_s, 10_000)


async def test_overdue_events_come_back_each_time_later_until_settled(db: asyncpg.Pool) -> None:
    event = accepted()
    mid = event.payload.message_id
    await redrive.watch(db, mid, event, datetime.now(UTC) - timedelta(seconds=1))
    assert [e.event_id for e in await take(db, 60) if e.payload.message_id == mid] == [event.event_id]
    first, attempts = await due_of(db, mid)
    assert attempts == 1 and 55 < (first - datetime.now(UTC)).total_seconds() <= 60
    assert mid not in [e.payload.message_id for e in await take(db, 60)]  # not due again yet
    await db.execute("UPDATE redrives SET due_at = now() - interval '1 second' WHERE message_id = $1", mid)
    assert mid in [e.payload.message_id for e in await take(db, 60)]
    second, attempts = await due_of(db, mid)
    assert attempts == 2 and 115 < (second - datetime.now(UTC)).total_seconds() <= 120  # twice as long

    sent = MessageSent(**event.caused(), payload=MessageSentPayload(
        message_id=mid, mailbox_id=event.payload.mailbox_id, rfc_message_id="<a@x.test>", relay="r:25",
        attempt=1, reply=SmtpReply(code=250, message="ok")))  # fmt: skip
    await project(db, [sent])  # the message ended: nothing is on its way for it any more
    assert await due_of(db, mid) is None
    # (an event never on the log: its record would keep replay waiting for the archive to hold it)
    await db.execute("DELETE FROM processed_events WHERE event_id = $1", sent.event_id)


async def test_a_lost_log_makes_what_was_in_flight_overdue_but_not_a_retry_still_to_come(
    db: asyncpg.Pool,
) -> None:
    in_flight, later = accepted(), accepted()
    retry = DispatchRetryDue(**later.caused(occurred_at=datetime.now(UTC) + timedelta(minutes=10)),
                             payload=DispatchRetryDuePayload(message_id=later.payload.message_id,
                                                             mailbox_id=later.payload.mailbox_id, attempt=2,
                                                             first_attempt_at=datetime.now(UTC),
                                                             accepted=later.payload))  # fmt: skip
    await redrive.watch(db, in_flight.payload.message_id, in_flight, datetime.now(UTC) + timedelta(minutes=5))
    await redrive.watch(db, later.payload.message_id, retry, retry.occurred_at + timedelta(minutes=5))
    await db.execute("UPDATE redrives SET attempts = 6 WHERE message_id = $1", in_flight.payload.message_id)
    assert await redrive.log_lost(db) >= 1
    # overdue now, and its next wait is the first one again, not 2^6 times as long
    due, attempts = await due_of(db, in_flight.payload.message_id)
    assert due <= datetime.now(UTC) and attempts == 0
    assert (await due_of(db, later.payload.message_id))[0] > retry.occurred_at


async def test_a_broker_with_another_cluster_id_has_lost_the_log_and_what_was_in_flight_is_due_now(
    db: asyncpg.Pool,
) -> None:
    """The scheduler asks this before each re-drive; rolled back at the end, so the running stack's
    scheduler never sees the made-up ids."""
    event = accepted()
    mid = event.payload.message_id
    async with db.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute("DELETE FROM log_identity")
            await redrive.watch(conn, mid, event, datetime.now(UTC) + timedelta(minutes=5))
            await conn.execute("UPDATE redrives SET attempts = 6 WHERE message_id = $1", mid)
            assert await redrive.log_changed(conn, "first-cluster") is None  # the first log seen
            assert await redrive.log_changed(conn, "first-cluster") is None  # the same log
            assert (await due_of(conn, mid))[0] > datetime.now(UTC)
            assert await redrive.log_changed(conn, "second-cluster") >= 1  # a new log: in flight again
            due, attempts = await due_of(conn, mid)
            assert due <= datetime.now(UTC) and attempts == 0
            assert await redrive.log_changed(conn, "second-cluster") is None  # and only once
        finally:
            await tx.rollback()


async def test_a_request_answered_queued_is_watched_only_while_undecided(db: asyncpg.Pool) -> None:
    def request() -> SendRequested:
        return SendRequested(org_id=new_id(), identity_id=new_id(), payload=SendRequestedPayload(
            handle="h@x.test", messages=[RequestedMessage(message_id=new_id(), conv_id=new_id(), to="m@x.test")],
            content=Content(subject="s", text="t")))  # fmt: skip

    undecided, decided = request(), request()
    await db.execute(
        "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2)", DECIDER, decided.event_id
    )
    for r in (undecided, decided):
        await redrive.watch_undecided(db, r, [m.message_id for m in r.payload.messages], 30)
    assert await due_of(db, undecided.payload.messages[0].message_id) is not None
    assert await due_of(db, decided.payload.messages[0].message_id) is None


async def test_the_watch_of_a_scheduled_message_cancelled_before_its_firing_was_decided_is_dropped(
    db: asyncpg.Pool,
) -> None:
    """Its firing decides nothing, so nothing would ever settle the watch: due, it is dropped, not
    published again and again."""
    event = accepted()
    mid, org, identity = event.payload.message_id, event.org_id, event.identity_id
    await redrive.watch(db, mid, event, datetime.now(UTC) - timedelta(seconds=1))
    await db.execute(
        """INSERT INTO scheduled_sends (message_id, org_id, identity_id, send_at, state)
           VALUES ($1, $2, $3, now(), 'cancelled')""",
        mid, org, identity,
    )  # fmt: skip
    assert mid not in [e.payload.message_id for e in await take(db, 60)]
    assert await due_of(db, mid) is None
