"""The ingress never answers 202 for what it could not hand to the log: 503 with Retry-After instead."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from devstack.infra import free_port
from schemas.commands import NewSend
from schemas.events import Content, RequestedMessage, SendRequested, SendRequestedPayload
from schemas.ids import new_id
from services.common.broker import make_broker
from services.common.settings import IngressSettings
from services.ingress.context import Context
from services.ingress.core.send import submit
from services.ingress.decisions import DecisionWaiter
from services.ingress.http import REQUEST_ID, ApiError, Call, Principal, observe
from services.ingress.idempotency import IdSource

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_unreachable_broker_is_503_with_retry_after() -> None:
    """A broker that cannot take the request makes the send a 503, within the publish timeout."""
    settings = IngressSettings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}", publish_timeout_s=1.0)
    c = Context(
        settings, None, make_broker(settings, "test"), DecisionWaiter(settings, None), None, None, None, None
    )
    request = SendRequested(org_id=new_id(), identity_id=new_id(), payload=SendRequestedPayload(
        handle="h@x.test", messages=[RequestedMessage(message_id=new_id(), conv_id=new_id(), to="a@x.test")],
        content=Content(subject="s", text="t")))  # fmt: skip
    identity = {
        "id": request.identity_id, "org_id": request.org_id, "handle": "h@x.test", "daily_cap": 10,
        "require_approval": False,
    }  # fmt: skip
    command = NewSend(
        identity_id=request.identity_id, messages=[["a@x.test"]], content=request.payload.content
    )
    http = make_mocked_request("POST", "/v1/identities/h@x.test/send")
    http[REQUEST_ID] = "corr"
    call = Call(http, Principal(request.org_id, new_id(), frozenset({"send"}), False), None, b"{}")
    with pytest.raises(ApiError) as info:
        await submit(c, command, identity, IdSource(), correlation_id=call.request_id)
    assert info.value.status == 503 and info.value.headers == {"Retry-After": "5"}
    assert c.waiter.pending == {}


@pytest.mark.parametrize("error", [ConnectionRefusedError(), asyncpg.CannotConnectNowError("starting up")])
async def test_database_trouble_in_a_handler_is_503_with_retry_after(error: Exception) -> None:
    """Infrastructure errors become a 503 the client can retry, not a 500."""

    async def handler(request: web.Request) -> web.Response:
        raise error

    app = web.Application(middlewares=[observe])
    app.router.add_post("/x", handler)
    async with TestClient(TestServer(app)) as client:
        r = await client.post("/x", headers={"X-Request-Id": str(uuid.uuid4())})
        assert r.status == 503 and r.headers["Retry-After"] == "5"
        assert (await r.json())["error"]["type"] == "unavailable"
