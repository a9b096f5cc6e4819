"""The projections: real PostgreSQL, events applied in any order and more than once."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from projections import app
from projections.messages import CONSUMER, plan
from schemas.events import (
    Content,
    DispatchDeferred,
    DispatchDeferredPayload,
    MessageBounced,
    MessageDeleted,
    MessageDeletedPayload,
    MessageDelivered,
    MessageFlagsChanged,
    MessageFlagsChangedPayload,
    MessageSent,
    MessageSentPayload,
    RecipientStatus,
    RequestedMessage,
    SendAccepted,
    SendAcceptedPayload,
    SendRequested,
    SendRequestedPayload,
    SmtpReply,
)
from schemas.ids import new_id

pytestmark = pytest.mark.asyncio(loop_scope="session")

applied: set = set()  # the events these tests projected, none of them on the log


async def project(db: asyncpg.Pool, events: list) -> int:
    applied.update(e.event_id for e in events)
    return await app.project(db, events)


@pytest.fixture(autouse=True)
async def forget(db: asyncpg.Pool):
    """The stack's database is shared: records of events that never were on the log would make replay
    wait for the archive to hold them (projections/replay.py, settle)."""
    yield
    await db.execute(
        "DELETE FROM processed_events WHERE consumer = $1 AND event_id = ANY($2)", CONSUMER, list(applied)
    )
    applied.clear()


def lifecycle():
    org, idn, mid, conv, acc = new_id(), new_id(), new_id(), new_id(), new_id()
    content = Content(subject="Hello", text="t", html="<p>t</p>")
    req = SendRequested(
        org_id=org,
        identity_id=idn,
        payload=SendRequestedPayload(
            handle="h@example.test",
            messages=[RequestedMessage(message_id=mid, conv_id=conv, to="m@x.test")],
            content=content,
        ),
    )
    acc_ev = SendAccepted(
        **req.caused(),
        payload=SendAcceptedPayload(
            message_id=mid,
            conv_id=conv,
            mailbox_id=acc,
            mailbox_email="s@t.test",
            affinity="new",
            rfc_message_id="<x@t.test>",
            from_addr="s@t.test",
            to=["m@x.test"],
            content=content,
            daily_cap=5,
            remaining=4,
        ),
    )
    sent = MessageSent(
        **acc_ev.caused(),
        payload=MessageSentPayload(
            message_id=mid,
            mailbox_id=acc,
            rfc_message_id="<x@t.test>",
            relay="r:25",
            reply=SmtpReply(code=250, message="ok"),
        ),
    )
    return mid, conv, [req, acc_ev, sent]


async def snapshot(db: asyncpg.Pool, mid, conv) -> tuple:
    msg = await db.fetchrow(
        """SELECT status, subject, text_body, html_body, from_addr, to_addrs, rfc_message_id, affinity, mailbox_id,
                  smtp_code, sent_at IS NOT NULL AS sent FROM messages WHERE id = $1""",
        mid,
    )
    c = await db.fetchrow("SELECT counterpart, subject, mailbox_id FROM conversations WHERE id = $1", conv)
    return tuple(msg), tuple(c)


async def test_any_order_and_redelivery_give_the_same_views(db: asyncpg.Pool) -> None:
    """Every permutation of a message's events, each delivered twice, converges to one identical view."""
    results = set()
    for order in itertools.permutations(range(3)):
        mid, conv, events = lifecycle()
        for i in order:
            assert await project(db, [events[i]]) == 1
            assert await project(db, [events[i]]) == 0  # redelivery changes nothing
        results.add(tuple(str(v) for v in (await snapshot(db, mid, conv))[0][:2]))
        msg, c = await snapshot(db, mid, conv)
        assert msg[0] == "sent" and msg[1] == "Hello" and msg[4] == "s@t.test" and msg[6] == "<x@t.test>"
        assert msg[9] == 250 and msg[10] is True
        assert c == ("m@x.test", "Hello", msg[8])
    assert results == {("sent", "Hello")}


async def test_a_report_and_the_relays_reply_in_either_order_give_the_same_row(db: asyncpg.Pool) -> None:
    """A bounce's report projected before or after the MessageSent it follows (they travel on different
    partitions: the live views and a replay may apply them in either order): the same status, reason and
    relay reply."""
    rows = set()
    for order in itertools.permutations(range(4)):
        mid, _, events = lifecycle()
        bounced = MessageBounced(**events[2].caused(), payload=RecipientStatus(
            message_id=mid, recipient="m@x.test", status="5.1.1", diagnostic="no such user"))  # fmt: skip
        events.append(bounced)
        for i in order:
            await project(db, [events[i]])
        rows.add(tuple(await db.fetchrow(
            "SELECT status, reason, smtp_code, smtp_message FROM messages WHERE id = $1", mid
        )))  # fmt: skip
    assert rows == {("bounced", "m@x.test: 5.1.1 no such user", 250, "ok")}


async def test_a_batch_with_repeats_applies_each_event_once(db: asyncpg.Pool) -> None:
    """One batch holding an event twice (a re-publish) and out of order projects it once."""
    mid, conv, events = lifecycle()
    assert await project(db, [events[2], events[0], events[2], events[1], events[0]]) == 3
    msg, _ = await snapshot(db, mid, conv)
    assert msg[0] == "sent" and msg[9] == 250


def eventful(org, identity, mailbox, mid, conv) -> list:
    """A message's many events, at fixed times: two deferrals, sent, delivered, bounced, flags, a delete."""
    at = datetime(2026, 11, 1, tzinfo=UTC)
    content = Content(subject="Terms", text="t", html=None)
    common = {"org_id": org, "identity_id": identity}
    deferred = [
        DispatchDeferred(**common, occurred_at=at + timedelta(seconds=2 + n), payload=DispatchDeferredPayload(
            message_id=mid, mailbox_id=mailbox, attempt=n, next_attempt_at=at, reason=f"try {n}",
            reply=SmtpReply(code=451, message=f"busy {n}")))
        for n in (1, 2)
    ]  # fmt: skip
    status = {"message_id": mid, "recipient": "m@x.test", "status": "5.1.1", "diagnostic": "no such user"}
    return [
        SendRequested(**common, occurred_at=at, payload=SendRequestedPayload(
            handle="h@example.test", content=content,
            messages=[RequestedMessage(message_id=mid, conv_id=conv, to="m@x.test")])),
        SendAccepted(**common, occurred_at=at + timedelta(seconds=1), payload=SendAcceptedPayload(
            message_id=mid, conv_id=conv, mailbox_id=mailbox, mailbox_email="s@t.test", affinity="new",
            rfc_message_id="<m1@t.test>", from_addr="s@t.test", to=["m@x.test"], content=content,
            daily_cap=5, remaining=4)),
        *deferred,
        MessageSent(**common, occurred_at=at + timedelta(seconds=5), payload=MessageSentPayload(
            message_id=mid, mailbox_id=mailbox, rfc_message_id="<m1@t.test>", relay="r:25",
            reply=SmtpReply(code=250, message="ok"))),
        MessageDelivered(**common, occurred_at=at + timedelta(seconds=6), payload=RecipientStatus(**status)),
        MessageBounced(**common, occurred_at=at + timedelta(seconds=7), payload=RecipientStatus(**status)),
        MessageFlagsChanged(**common, occurred_at=at + timedelta(seconds=8),
                            payload=MessageFlagsChangedPayload(message_id=mid, is_read=True)),
        MessageFlagsChanged(**common, occurred_at=at + timedelta(seconds=9),
                            payload=MessageFlagsChangedPayload(message_id=mid, is_read=False, is_starred=True)),
        MessageDeleted(**common, occurred_at=at + timedelta(seconds=10),
                       payload=MessageDeletedPayload(message_id=mid)),
    ]  # fmt: skip


async def rows_of(db: asyncpg.Pool, mid, conv) -> tuple:
    """The message and conversation rows, but for their ids."""
    msg = await db.fetchrow("SELECT * FROM messages WHERE id = $1", mid)
    c = await db.fetchrow("SELECT * FROM conversations WHERE id = $1", conv)
    drop = {"id", "conv_id"}
    return (
        {k: v for k, v in msg.items() if k not in drop} if msg else None,
        {k: v for k, v in c.items() if k not in drop} if c else None,
    )


async def test_a_batch_folds_a_rows_events_into_the_view_they_make_one_at_a_time(db: asyncpg.Pool) -> None:
    """A batch (its upserts folded into one per row where exact) leaves each row as applying its events
    one at a time in the same order does: for random orders, after random earlier events."""
    shuffle = random.Random(15)
    org, identity, mailbox = new_id(), new_id(), new_id()
    for _ in range(40):
        order = list(range(10))
        shuffle.shuffle(order)
        earlier = shuffle.randrange(0, 10)
        views = []
        for batched in (False, True):
            mid, conv = new_id(), new_id()
            made = eventful(org, identity, mailbox, mid, conv)
            events = [made[i] for i in order]
            for event in events[:earlier]:
                await project(db, [event])
            if batched:
                assert await project(db, events[earlier:]) == len(events) - earlier
            else:
                for event in events[earlier:]:
                    await project(db, [event])
            views.append(await rows_of(db, mid, conv))
        differ = {k for one, other in zip(*views, strict=True) for k in one or {} if one[k] != other[k]}
        assert views[0] == views[1], (order, earlier, differ)


async def test_the_one_statement_path_leaves_the_rows_the_statements_one_by_one_leave(
    db: asyncpg.Pool,
) -> None:
    """A batch whose upserts make one round runs as one statement (every shape's rows from unnest()); it
    leaves each row as the same plan's statements run one by one (as replay runs them) do: for random
    orders and subsets of a message's upserting events, after random earlier events. Bodies, arrays and
    JSON go through the array and JSON texts."""
    shuffle = random.Random(24)
    org, identity, mailbox = new_id(), new_id(), new_id()
    fast = 0
    for _ in range(40):
        order = list(range(7))  # the upserting events: requested, accepted, two deferrals, sent, reports
        shuffle.shuffle(order)
        order = order[: shuffle.randrange(1, 8)]
        earlier = shuffle.randrange(0, len(order))
        views = []
        for one_statement in (True, False):
            mid, conv = new_id(), new_id()
            made = eventful(org, identity, mailbox, mid, conv)
            made[0].payload.content.cc.append('a"b\\c@x.test')  # quoted in the array text
            made[0].payload.content.labels.extend(["x,y", "{z}", ""])
            events = [made[i] for i in order]
            for event in events[:earlier]:
                await project(db, [event])
            rest = events[earlier:]
            if one_statement:
                fast += len(plan(rest)) == 1
                assert await project(db, rest) == len(rest)
            else:
                applied.update(e.event_id for e in rest)
                async with db.acquire() as conn, conn.transaction():
                    assert len(await app.claim(conn, rest)) == len(rest)
                    for groups in plan(rest):
                        for sql, rows in groups.items():
                            await conn.executemany(sql, rows)
            views.append(await rows_of(db, mid, conv))
        differ = {k for one, other in zip(*views, strict=True) for k in one or {} if one[k] != other[k]}
        assert views[0] == views[1], (order, earlier, differ)
    assert fast > 20  # most of them went the one-statement way
