"""Housekeeping against real PostgreSQL: consumers' tracking rows are forgotten after their retention."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest

from schemas.ids import new_id
from services.common import db as store
from services.common.domain.webhooks import queue
from tests.services.test_webhook_queue import endpoint as new_endpoint

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


async def test_finished_webhook_deliveries_past_retention_are_removed(db: asyncpg.Pool) -> None:
    """Delivered and failed deliveries go after the retention, with their attempts; pending ones stay."""
    endpoint, org = await new_endpoint(db, enabled=False)  # the running deliverer leaves it alone
    rows = {name: new_id() for name in ("old_delivered", "old_failed", "old_pending", "young_delivered")}
    for name, delivery in rows.items():
        await db.execute(
            """INSERT INTO webhook_deliveries (id, endpoint_id, org_id, event_id, event_type, body, state,
                                               created_at)
               VALUES ($1, $2, $3, $4, 'message.sent', '{}', $5, now() - $6::interval)""",
            delivery, endpoint, org, new_id(), name.split("_")[1],
            timedelta(days=40 if name.startswith("old") else 1),
        )  # fmt: skip
    await db.execute(
        "INSERT INTO webhook_attempts (delivery_id, attempt, started_at, duration_ms) VALUES ($1, 1, now(), 5)",
        rows["old_delivered"],
    )
    assert await queue.forget_finished(db, timedelta(days=30)) >= 2
    left = {
        r["id"] for r in await db.fetch("SELECT id FROM webhook_deliveries WHERE endpoint_id = $1", endpoint)
    }
    assert left == {rows["old_pending"], rows["young_delivered"]}
    assert not await db.fetchval(
        "SELECT count(*) FROM webhook_attempts WHERE delivery_id = $1", rows["old_delivered"]
    )
