"""Housekeeping against real PostgreSQL: consumers' tracking rows are forgotten after their retention."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest

from services.common import db as store
from services.common.ids import new_id

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_tracking_rows_past_retention_are_removed_in_chunks(db: asyncpg.Pool) -> None:
    """Rows older than the retention go, a chunk at a time; younger rows stay."""
    consumer = f"test-{new_id().hex[:6]}"
    old = [new_id() for _ in range(25)]
    young = [new_id() for _ in range(3)]
    await db.executemany(
        "INSERT INTO processed_events (consumer, event_id, processed_at) VALUES ($1, $2, now() - $3::interval)",
        [(consumer, e, timedelta(days=30)) for e in old] + [(consumer, e, timedelta(days=1)) for e in young],
    )
    assert await store.forget_processed(db, timedelta(days=14), chunk=10) >= 25
    left = {
        r["event_id"]
        for r in await db.fetch("SELECT event_id FROM processed_events WHERE consumer = $1", consumer)
    }
    assert left == set(young)
