"""The webhook deliveries queue against real PostgreSQL: order per message, bounds per endpoint, leases.

Each test works inside a transaction it rolls back, so the running webhooks service never sees its rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from schemas.ids import new_id
from services.common.domain.webhooks import queue

pytestmark = pytest.mark.asyncio(loop_scope="session")
HOUR = timedelta(hours=1)


@pytest.fixture
async def conn(db: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with db.acquire() as c:
        tx = c.transaction()
        await tx.start()
        try:
            yield c
        finally:
            await tx.rollback()


async def endpoint(conn: asyncpg.Connection | asyncpg.Pool, enabled: bool = True):
    """A webhook endpoint of a new organization; returns (endpoint id, organization id)."""
    org = await conn.fetchval("INSERT INTO organizations (id, name) VALUES ($1, 'q') RETURNING id", new_id())
    return await conn.fetchval(
        """INSERT INTO webhook_endpoints (id, org_id, url, events, secret, enabled)
           VALUES ($1, $2, 'http://192.0.2.1/', '{message.sent}', 'whsec_x', $3) RETURNING id""",
        new_id(),
        org,
        enabled,
    ), org


async def queued(conn: asyncpg.Connection, endpoint_id, org, message_ids) -> list:
    """Queue one delivery per message id given (in order); returns their ids."""
    rows = [
        (queue.delivery_id(endpoint_id, e), endpoint_id, org, e, "message.sent", m, "{}")
        for m in message_ids
        for e in [new_id()]
    ]
    await queue.insert(conn, rows)
    return [r[0] for r in rows]


async def claimed(conn, endpoint_id, inflight=None, per_endpoint=8, lease=HOUR) -> list:
    rows = await queue.claim(conn, 1000, inflight or {}, per_endpoint, lease)
    return [r["id"] for r in rows if r["endpoint_id"] == endpoint_id]


async def test_a_messages_later_event_waits_for_the_earlier_one(conn: asyncpg.Connection) -> None:
    e, org = await endpoint(conn)
    m1, m2 = new_id(), new_id()
    first, second, other = await queued(conn, e, org, [m1, m1, m2])
    assert set(await claimed(conn, e, lease=timedelta(0))) == {first, other}
    await conn.execute("UPDATE webhook_deliveries SET state = 'delivered' WHERE id = $1", first)
    assert second in await claimed(conn, e)


async def test_a_failed_earlier_event_no_longer_holds_the_later_one(conn: asyncpg.Connection) -> None:
    e, org = await endpoint(conn)
    m = new_id()
    first, second = await queued(conn, e, org, [m, m])
    await conn.execute("UPDATE webhook_deliveries SET state = 'failed' WHERE id = $1", first)
    assert await claimed(conn, e) == [second]


async def test_claims_respect_the_endpoints_in_flight_bound(conn: asyncpg.Connection) -> None:
    e, org = await endpoint(conn)
    await queued(conn, e, org, [new_id() for _ in range(5)])
    assert len(await claimed(conn, e, inflight={e: 1}, per_endpoint=2)) == 1
    assert len(await claimed(conn, e, per_endpoint=3)) == 3


async def test_a_claimed_delivery_is_leased(conn: asyncpg.Connection) -> None:
    e, org = await endpoint(conn)
    [d] = await queued(conn, e, org, [new_id()])
    assert await claimed(conn, e) == [d]
    assert await claimed(conn, e) == []  # leased for an hour
    attempts = await conn.fetchval("SELECT attempts FROM webhook_deliveries WHERE id = $1", d)
    assert attempts == 1


async def test_a_disabled_endpoints_deliveries_wait(conn: asyncpg.Connection) -> None:
    e, org = await endpoint(conn, enabled=False)
    [d] = await queued(conn, e, org, [new_id()])
    assert await claimed(conn, e) == []
    await conn.execute("UPDATE webhook_endpoints SET enabled = true WHERE id = $1", e)
    assert await claimed(conn, e) == [d]


async def test_a_redelivered_event_adds_no_delivery(conn: asyncpg.Connection) -> None:
    e, org = await endpoint(conn)
    event = new_id()
    row = (queue.delivery_id(e, event), e, org, event, "message.sent", new_id(), "{}")
    await queue.insert(conn, [row])
    await queue.insert(conn, [row])
    assert await conn.fetchval("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1", e) == 1
