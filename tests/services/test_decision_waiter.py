"""How a send request hears its decision: decide's commit notifies the answers; the ingress reads what was
recorded for a request notified without them, or when it missed the notification."""

from __future__ import annotations

import time
import uuid

import asyncpg
import pytest

from schemas.events import SendRejected, SendRejectedPayload
from schemas.ids import new_id
from services.common.domain.decided import CHANNEL, Answer, notifications
from services.common.settings import CommonSettings
from services.decide.app import CONSUMER
from services.ingress.decisions import DecisionWaiter

pytestmark = pytest.mark.asyncio(loop_scope="session")


def a_decision() -> SendRejected:
    payload = SendRejectedPayload(
        message_id=new_id(), conv_id=None, to=["a@x.test"], reason="cap_exceeded", daily_cap=5, remaining=0
    )
    return SendRejected(org_id=new_id(), payload=payload)


async def record(
    db: asyncpg.Pool,
    request: uuid.UUID,
    decision: SendRejected,
    *,
    notify: bool,
    payloads: list[str] | None = None,
) -> None:
    """What decide's write does: the decisions on the request's row and, at commit, the notification
    (`payloads`, or those decide would send)."""
    async with db.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO processed_events (consumer, event_id, outputs) VALUES ($1, $2, $3)",
            CONSUMER,
            request,
            [decision.model_dump(mode="json")],
        )
        if notify:
            for payload in payloads or notifications({new_id(): [a_decision()], request: [decision]}):
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)


async def answer_when_notified(
    db: asyncpg.Pool, service_env: dict, payloads: list[str] | None = None
) -> None:
    """A listening waiter gets the decision recorded and notified (with `payloads`, or decide's) at once."""
    waiter = DecisionWaiter(CommonSettings(database_url=service_env["DATABASE_URL"]), db)
    await waiter.start()
    try:
        request, decision = new_id(), a_decision()
        waiter.expect(request)
        started = time.monotonic()
        await record(
            db, request, decision, notify=True, payloads=payloads and [p.format(request) for p in payloads]
        )
        [got] = await waiter.wait(request, timeout=10)
        assert got == Answer.of(decision) and time.monotonic() - started < 5  # at once, not at the end
        assert waiter.pending == {}
    finally:
        await waiter.stop()


async def test_a_notified_decision_is_answered_at_once(db: asyncpg.Pool, service_env: dict) -> None:
    await answer_when_notified(db, service_env)


async def test_a_missed_notification_is_made_up_for_when_the_wait_ends(
    db: asyncpg.Pool, service_env: dict
) -> None:
    """Not listening (the connection was lost): the decision recorded meanwhile is still the answer."""
    waiter = DecisionWaiter(CommonSettings(database_url=service_env["DATABASE_URL"]), db)  # never started
    request, decision = new_id(), a_decision()
    waiter.expect(request)
    await record(db, request, decision, notify=False)
    [got] = await waiter.wait(request, timeout=0.2)
    assert got == Answer.of(decision)


async def test_no_recorded_decision_within_the_timeout_is_no_answer(
    db: asyncpg.Pool, service_env: dict
) -> None:
    waiter = DecisionWaiter(CommonSettings(database_url=service_env["DATABASE_URL"]), db)
    request = new_id()
    waiter.expect(request)
    assert await waiter.wait(request, timeout=0.2) == []


async def test_a_request_notified_without_its_answers_is_read(db: asyncpg.Pool, service_env: dict) -> None:
    """A request whose answers do not fit in a notification is named alone: the ingress reads its record."""
    await answer_when_notified(db, service_env, payloads=['{{"{}": null}}'])
