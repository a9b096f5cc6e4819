"""Dispatch's group commit of outcomes, against real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from schemas.events import MessageFailed, MessageFailedPayload
from schemas.ids import new_id
from services.common import db as store
from services.dispatch.recorder import OutcomeRecorder

pytestmark = pytest.mark.asyncio(loop_scope="session")


def outcome(reason: str) -> MessageFailed:
    return MessageFailed(org_id=new_id(), payload=MessageFailedPayload(message_id=new_id(), reason=reason))


async def test_outcomes_recorded_together_read_back_whole_and_first_wins(db: asyncpg.Pool) -> None:
    """Many concurrent records share statements, each reads back as its own list, and a second record loses."""
    consumer = f"test-{uuid.uuid4().hex[:6]}"
    recorder = OutcomeRecorder(db, consumer, max_items=7)
    events = [(new_id(), [outcome(f"r{i}"), outcome(f"s{i}")]) for i in range(20)]
    results = await asyncio.gather(*(recorder.record(e, outs) for e, outs in events))
    assert results == [outs for _, outs in events]
    stored = await store.recorded_many(db, consumer, [e for e, _ in events])
    assert stored == dict(events)
    again = await recorder.record(events[0][0], [outcome("late")])
    assert again == events[0][1]
