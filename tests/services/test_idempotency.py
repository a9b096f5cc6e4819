"""The idempotency claim against real PostgreSQL: an interrupted attempt's retry repeats its ids."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from services.ingress.http import Call, Principal
from services.ingress.idempotency import IdSource, idempotent

pytestmark = pytest.mark.asyncio(loop_scope="session")


def call_with_key(key: str, org: uuid.UUID, body: bytes = b'{"a": 1}') -> Call:
    request = make_mocked_request("POST", "/v1/x", headers={"Idempotency-Key": key})
    return Call(request, Principal(org, uuid.uuid4(), frozenset({"send"}), False), None, body)


async def test_retry_after_a_failed_attempt_repeats_the_same_ids(db: asyncpg.Pool) -> None:
    """An attempt that fails after creating ids (maybe after publishing) is retried with the very same ids."""
    org, key = uuid.uuid4(), str(uuid.uuid4())
    seen: list[uuid.UUID] = []

    async def crashes(new: IdSource) -> web.Response:
        seen.append(new("event"))
        raise RuntimeError("broker went away after the publish")

    async def succeeds(new: IdSource) -> web.Response:
        seen.append(new("event"))
        return web.json_response({"ok": True}, status=202)

    with pytest.raises(RuntimeError):
        await idempotent(call_with_key(key, org), db, 1.0, crashes)
    response = await idempotent(call_with_key(key, org), db, 1.0, succeeds)
    assert response.status == 202
    assert seen[0] == seen[1]
    replay = await idempotent(call_with_key(key, org), db, 1.0, succeeds)
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.body == response.body
    assert len(seen) == 2
