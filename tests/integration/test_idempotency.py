"""Idempotency-Key on sends, on the real stack: replay, conflict, concurrency, scope, expiry."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from tests.conftest import Api, Relay, new_org
from tests.integration.test_send import make_identity

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

BODY = {"to": "morgan@example.test", "subject": "Step 1", "text": "Hi"}


async def raw_send(api: Api, handle: str, body: dict, key: str) -> tuple[int, bytes, dict]:
    async with api.session.post(
        f"{api.base}/v1/identities/{handle}/send",
        json=body,
        headers={"Authorization": f"Bearer {api.key}", "Idempotency-Key": key},
    ) as r:
        return r.status, await r.read(), dict(r.headers)


async def test_replay_is_byte_identical_and_marked(api: Api, relay: Relay) -> None:
    """Same key, same body: the original response byte for byte, with Idempotent-Replayed, and one delivery."""
    handle, _ = await make_identity(api, relay)
    key = f"lead-42:step-1:{uuid.uuid4()}"
    s1, b1, h1 = await raw_send(api, handle, BODY, key)
    s2, b2, h2 = await raw_send(api, handle, BODY, key)
    assert s1 == s2 == 202
    assert b2 == b1
    assert "Idempotent-Replayed" not in h1 and h2["Idempotent-Replayed"] == "true"
    await relay.wait_for(1)
    await asyncio.sleep(0.5)
    assert len(relay.received) == 1


async def test_same_key_different_body_is_409(api: Api, relay: Relay) -> None:
    """Reusing a key for a different request is a conflict, and sends nothing more."""
    handle, _ = await make_identity(api, relay)
    key = str(uuid.uuid4())
    assert (await raw_send(api, handle, BODY, key))[0] == 202
    status, body, _ = await raw_send(api, handle, {**BODY, "text": "Different"}, key)
    assert status == 409 and b"different request" in body
    await relay.wait_for(1)
    await asyncio.sleep(0.5)
    assert len(relay.received) == 1


async def test_fifty_concurrent_requests_with_one_key_send_once(
    api: Api, relay: Relay, db: asyncpg.Pool
) -> None:
    """50 identical requests at once: one SMTP delivery, and every answer is the same response."""
    handle, _ = await make_identity(api, relay)
    key = str(uuid.uuid4())
    results = await asyncio.gather(*(raw_send(api, handle, BODY, key) for _ in range(50)))
    statuses = [s for s, _, _ in results]
    assert statuses.count(202) == 50, statuses
    assert len({b for _, b, _ in results}) == 1
    assert sum(h.get("Idempotent-Replayed") == "true" for _, _, h in results) == 49
    await relay.wait_for(1)
    await asyncio.sleep(1.0)
    assert len(relay.received) == 1
    identity = await db.fetchval("SELECT id FROM identities WHERE handle = $1", handle)
    assert await db.fetchval("SELECT sent FROM identity_usage WHERE identity_id = $1", identity) == 1


async def test_keys_are_scoped_per_organization(api: Api, operator: Api, relay: Relay) -> None:
    """The same key in two organizations makes two independent sends."""
    key = str(uuid.uuid4())
    other = await new_org(operator)
    for client in (api, other):
        handle, _ = await make_identity(client, relay)
        status, _, headers = await raw_send(client, handle, BODY, key)
        assert status == 202 and "Idempotent-Replayed" not in headers
    await relay.wait_for(2)


async def test_expired_key_starts_a_new_send(api: Api, relay: Relay, db: asyncpg.Pool) -> None:
    """After its 24 hours a key is new again: the same request sends again."""
    handle, _ = await make_identity(api, relay)
    key = str(uuid.uuid4())
    _, first, _ = await raw_send(api, handle, BODY, key)
    await db.execute(
        "UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = $1", key
    )
    status, second, headers = await raw_send(api, handle, BODY, key)
    assert status == 202 and "Idempotent-Replayed" not in headers and second != first
    await relay.wait_for(2)


async def test_bad_idempotency_key_is_400(api: Api, relay: Relay) -> None:
    """An over-long key is refused with a message naming the header."""
    handle, _ = await make_identity(api, relay)
    status, body, _ = await raw_send(api, handle, BODY, "k" * 256)
    assert status == 400 and b"Idempotency-Key" in body
