"""The projections: real PostgreSQL, events applied in any order and more than once."""

from __future__ import annotations

import itertools

import asyncpg
import pytest

from projections.app import project
from schemas.events import (
    Content,
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

pytestmark = pytest.mark.asyncio(loop_scope="session")


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


async def test_a_batch_with_repeats_applies_each_event_once(db: asyncpg.Pool) -> None:
    """One batch holding an event twice (a re-publish) and out of order projects it once."""
    mid, conv, events = lifecycle()
    assert await project(db, [events[2], events[0], events[2], events[1], events[0]]) == 3
    msg, _ = await snapshot(db, mid, conv)
    assert msg[0] == "sent" and msg[9] == 250
