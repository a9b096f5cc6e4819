"""How a send request hears its decision: decide's commit notifies, the ingress reads what was recorded."""

from __future__ import annotations

import time
import uuid

import asyncpg
import pytest

from schemas.events import MessageFailed, MessageFailedPayload
from services.common.ids import new_id
from services.common.settings import CommonSettings
from services.decide.app import CONSUMER, DECIDED
from services.ingress.decisions import DecisionWaiter

pytestmark = pytest.mark.asyncio(loop_scope="session")


def a_decision() -> MessageFailed:  # any event will do: the waiter hands back what decide recorded
    return MessageFailed(org_id=new_id(), payload=MessageFailedPayload(message_id=new_id(), reason="r"))


async def record(db: asyncpg.Pool, request: uuid.UUID, decision: MessageFailed, *, notify: bool) -> None:
    """What decide's write does: the decisions on the request's row and, at commit, the notification."""
    async with db.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO processed_events (consumer, event_id, outputs) VALUES ($1, $2, $3)",
            CONSUMER,
            request,
            [decision.model_dump(mode="json")],
        )
        if notify:
            await conn.execute("SELECT pg_notify($1, $2)", DECIDED, f"{uuid.uuid4()},{request}")


async def test_a_notified_decision_is_read_at_once(db: asyncpg.Pool, service_env: dict) -> None:
    waiter = DecisionWaiter(CommonSettings(database_url=service_env["DATABASE_URL"]), db)
    await waiter.start()
    try:
        request, decision = new_id(), a_decision()
        waiter.expect(request)
        started = time.monotonic()
        await record(db, request, decision, notify=True)
        [got] = await waiter.wait(request, timeout=10)
        assert got.event_id == decision.event_id and time.monotonic() - started < 5
        assert waiter.pending == {}
    finally:
        await waiter.stop()


async def test_a_missed_notification_is_made_up_for_when_the_wait_ends(
    db: asyncpg.Pool, service_env: dict
) -> None:
    """Not listening (the connection was lost): the decision recorded meanwhile is still the answer."""
    waiter = DecisionWaiter(CommonSettings(database_url=service_env["DATABASE_URL"]), db)  # never started
    request, decision = new_id(), a_decision()
    waiter.expect(request)
    await record(db, request, decision, notify=False)
    [got] = await waiter.wait(request, timeout=0.2)
    assert got.event_id == decision.event_id


async def test_no_recorded_decision_within_the_timeout_is_no_answer(
    db: asyncpg.Pool, service_env: dict
) -> None:
    waiter = DecisionWaiter(CommonSettings(database_url=service_env["DATABASE_URL"]), db)
    request = new_id()
    waiter.expect(request)
    assert await waiter.wait(request, timeout=0.2) == []
