"""The archive against real PostgreSQL: each event kept once, chained per organization, and any change
to a kept row found by `verify_chain`, named."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from projections.archive import Archive, drop_expired
from projections.chain import GENESIS, verify_chain
from schemas.events import (
    Content,
    MessageFlagsChanged,
    MessageFlagsChangedPayload,
    RequestedMessage,
    SendRequested,
    SendRequestedPayload,
)
from schemas.ids import new_id
from services.common.broker import Logged

pytestmark = pytest.mark.asyncio(loop_scope="session")


def flagged(org, message_id, n: int, at: datetime | None = None) -> MessageFlagsChanged:
    extra = {"occurred_at": at} if at else {}
    return MessageFlagsChanged(
        org_id=org, payload=MessageFlagsChangedPayload(message_id=message_id, is_read=n % 2 == 0), **extra
    )


def logged(events, topic="t.messages", partition=0, start=0) -> list[Logged]:
    return [Logged(e, topic, partition, start + i) for i, e in enumerate(events)]


async def chain(db: asyncpg.Pool, org) -> list[asyncpg.Record]:
    return await db.fetch(
        """SELECT seq, event_id, topic, "offset", message_ids, event::text AS text, prev_hash, hash
             FROM event_archive WHERE org_id = $1 ORDER BY seq""",
        org,
    )


async def test_each_event_is_kept_once_in_log_order_and_chained(db: asyncpg.Pool) -> None:
    org, mid = new_id(), new_id()
    archive = Archive(db)
    events = [flagged(org, mid, n) for n in range(5)]
    # a batch holding a re-publish of its second event, then the whole batch delivered again
    assert await archive.write(logged([events[0], events[1], events[1], events[2]])) == 3
    assert await archive.write(logged(events)) == 2
    rows = await chain(db, org)
    assert [r["event_id"] for r in rows] == [e.event_id for e in events]
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(r["message_ids"] == [mid] for r in rows)
    assert [r["offset"] for r in rows[:3]] == [0, 1, 3]  # where each was first read
    prev = GENESIS
    for r in rows:  # the documented formula, with sha256 alone
        assert r["prev_hash"] == prev
        assert r["hash"] == hashlib.sha256(prev + f"{org}:{r['seq']}:".encode() + r["text"].encode()).digest()
        prev = r["hash"]
    async with db.acquire() as conn:
        assert await verify_chain(conn, org) is None


async def test_a_request_for_several_messages_is_in_each_ones_trail(db: asyncpg.Pool) -> None:
    org, a, b = new_id(), new_id(), new_id()
    request = SendRequested(org_id=org, identity_id=new_id(), payload=SendRequestedPayload(
        handle="h@x.test", content=Content(subject="s", text="t"),
        messages=[RequestedMessage(message_id=a, conv_id=new_id(), to="a@x.test"),
                  RequestedMessage(message_id=b, conv_id=new_id(), to="b@x.test")]))  # fmt: skip
    await Archive(db).write(logged([request], topic="t.requests"))
    for m in (a, b):
        assert await db.fetchval(
            "SELECT count(*) FROM event_archive WHERE message_ids @> ARRAY[$1]::uuid[]", m
        ) == 1  # fmt: skip


async def test_two_archivers_appending_to_one_organization_keep_one_chain(db: asyncpg.Pool) -> None:
    """Two members of the group (say, during a rebalance) write batches of one organization at once,
    some events in both: every event once, numbered without gaps, the chain whole."""
    org = new_id()
    events = [flagged(org, new_id(), n) for n in range(60)]
    first, second = Archive(db), Archive(db)
    await asyncio.gather(
        *(first.write(logged(events[i : i + 10], partition=0)) for i in range(0, 60, 10)),
        *(second.write(logged(events[i : i + 15], partition=1)) for i in range(0, 60, 15)),
    )
    rows = await chain(db, org)
    assert sorted(r["event_id"] for r in rows) == sorted(e.event_id for e in events)
    assert [r["seq"] for r in rows] == list(range(1, 61))
    async with db.acquire() as conn:
        assert await verify_chain(conn, org) is None


async def test_months_get_their_partitions(db: asyncpg.Pool) -> None:
    org = new_id()
    at = [datetime(2025, 12, 31, 23, 59, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)]
    await Archive(db).write(logged([flagged(org, new_id(), n, t) for n, t in enumerate(at)]))
    placed = await db.fetch(
        "SELECT tableoid::regclass::text AS part FROM event_archive WHERE org_id = $1 ORDER BY seq", org
    )
    assert [r["part"] for r in placed] == ["event_archive_2025_12", "event_archive_2026_01"]


@pytest.mark.parametrize("tamper", ["edit", "delete", "swap"])
async def test_any_change_to_a_kept_row_is_found_and_named(db: asyncpg.Pool, tamper: str) -> None:
    org, mid = new_id(), new_id()
    events = [flagged(org, mid, n) for n in range(6)]
    await Archive(db).write(logged(events))
    target = events[3].event_id
    match tamper:
        case "edit":  # one field of the payload rewritten
            await db.execute(
                """UPDATE event_archive SET event = jsonb_set(event, '{payload,is_read}', 'true'::jsonb)
                    WHERE event_id = $1""",
                target,
            )
        case "delete":
            await db.execute("DELETE FROM event_archive WHERE event_id = $1", target)
        case "swap":  # two rows' events exchanged, their hashes left as they were
            await db.execute(
                """UPDATE event_archive a SET event = b.event FROM event_archive b
                    WHERE a.org_id = $1 AND b.org_id = $1 AND (a.seq, b.seq) IN ((4, 5), (5, 4))""",
                org,
            )
    async with db.acquire() as conn:
        broken = await verify_chain(conn, org)
    assert broken is not None and broken.seq == 4, broken
    if tamper == "delete":
        assert "missing" in broken.problem
    else:
        assert broken.event_id == target and "changed" in broken.problem


async def test_retention_drops_whole_months_and_the_rest_of_the_chain_still_verifies(
    db: asyncpg.Pool,
) -> None:
    org, mid = new_id(), new_id()
    months = [datetime(2019, 3, 10, tzinfo=UTC)] * 3 + [datetime(2019, 4, 10, tzinfo=UTC)] * 2
    months += [datetime(2019, 5, 10, tzinfo=UTC)] * 3
    events = [flagged(org, mid, n, at + timedelta(seconds=n)) for n, at in enumerate(months)]
    await Archive(db).write(logged(events))

    # months that ended before 2019-05-02: March and April
    dropped = await drop_expired(db, datetime.now(UTC) - datetime(2019, 5, 2, tzinfo=UTC))
    assert dropped == ["event_archive_2019_03", "event_archive_2019_04"]
    assert [r["seq"] for r in await chain(db, org)] == [6, 7, 8]
    async with db.acquire() as conn:
        assert await verify_chain(conn, org) is None  # anchored at the last event dropped
        await db.execute(
            "UPDATE event_archive SET event = jsonb_set(event, '{payload,is_read}', 'true') WHERE event_id = $1",
            events[7].event_id,  # is_read false, made true
        )
        broken = await verify_chain(conn, org)
    assert broken is not None and (broken.seq, broken.event_id) == (8, events[7].event_id)
    assert await drop_expired(db, datetime.now(UTC) - datetime(2019, 5, 2, tzinfo=UTC)) == []


async def test_an_event_postgresql_cannot_keep_as_it_is_is_archived_with_u_fffd(db) -> None:
    """A NUL or a lone surrogate put on the log by something else than our code: the event is archived all
    the same (each such character as U+FFFD, what its hash covers), so replay and tenant deletion, which
    wait for the archive to hold what the views applied, are not held up by it for good."""
    event = SendRequested(org_id=new_id(), identity_id=new_id(), payload=SendRequestedPayload(
        handle="h@example.test", content=Content(subject="a\x00b \ud800"),
        messages=[RequestedMessage(message_id=new_id(), conv_id=new_id(), to="m@example.test")]))  # fmt: skip
    assert await Archive(db).write([Logged(event, "t", 0, 1)]) == 1
    stored = await db.fetchval("SELECT event FROM event_archive WHERE event_id = $1", event.event_id)
    assert stored["payload"]["content"]["subject"] == "a\ufffdb \ufffd"
    await db.execute("DELETE FROM event_archive WHERE org_id = $1", event.org_id)
    await db.execute("DELETE FROM archive_heads WHERE org_id = $1", event.org_id)
