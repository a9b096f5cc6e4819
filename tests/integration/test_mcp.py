"""sendstream-mcp (clients/mcp) driven by the `mcp` SDK's own client over stdio, against the real stack:
its tools listed with their schemas, a send made twice under one idempotency_key reaching the relay
once, wait_for_reply hearing a reply that came in by SMTP, and a refusal carrying the API's message;
and the example agent (examples/reply_agent.py) answering mail, through the client and through the tools."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import uuid
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from devstack.infra import free_port
from tests.conftest import Api, Relay, deliver, eventually
from tests.integration.test_inbound import reply_to
from tests.integration.test_send import make_identity

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
ROOT = Path(__file__).resolve().parents[2]

TOOLS = {
    "list_identities", "send_email", "reply_email", "list_threads", "get_thread", "search_messages",
    "wait_for_reply", "create_draft", "cancel_scheduled",
}  # fmt: skip


@asynccontextmanager
async def mcp_session(api: Api):
    """The server as an MCP client starts it: the console script, over stdio, configured by environment."""
    script = shutil.which("sendstream-mcp", path=os.path.dirname(sys.executable))
    assert script, "sendstream-mcp is not installed (make test installs clients/mcp)"
    params = StdioServerParameters(
        command=script, env={**os.environ, "SENDSTREAM_API_URL": api.base, "SENDSTREAM_API_KEY": api.key}
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


def answer(result) -> object:
    assert not result.isError, result.content
    return json.loads(result.content[0].text)


async def test_the_tools_send_once_per_key_wait_for_the_reply_and_carry_the_apis_errors(
    api: Api, relay: Relay, inbound: int
) -> None:
    handle, [mailbox] = await make_identity(api, relay)
    async with mcp_session(api) as mcp:
        listed = {t.name: t for t in (await mcp.list_tools()).tools}
        assert set(listed) == TOOLS
        send_schema = listed["send_email"].inputSchema
        assert {"identity", "to", "subject", "idempotency_key"} <= set(send_schema["required"])
        assert "idempotency_key" in listed["reply_email"].inputSchema["required"]
        assert "idempotency_key" in listed["create_draft"].inputSchema["required"]
        assert listed["wait_for_reply"].inputSchema["properties"]["timeout"]["maximum"] == 30

        assert handle in [i["handle"] for i in answer(await mcp.call_tool("list_identities", {}))["data"]]
        key = f"task-{uuid.uuid4().hex[:6]}"
        args = {"identity": handle, "to": ["ana@example.test"], "subject": "Hello", "text": "Hi Ana", "idempotency_key": key}
        first, again = [answer(await mcp.call_tool("send_email", args)) for _ in range(2)]
        assert first == again and first["accepted"] == 1
        [out] = await relay.wait_for(1)
        await asyncio.sleep(1)
        assert len(relay.received) == 1  # the second call under the same key sent nothing
        conv = first["messages"][0]["convId"]

        waiting = asyncio.ensure_future(mcp.call_tool("wait_for_reply", {"conversation_id": conv, "timeout": 20}))
        await asyncio.sleep(1)
        await deliver(inbound, reply_to(out.message, "ana@example.test", mailbox["email"], "Yes, Monday."), "ana@example.test", [mailbox["email"]])
        reply = answer(await waiting)["reply"]
        assert reply["from"] == "ana@example.test" and "Yes, Monday." in reply["text"]
        # Waiting again in the conversation: its latest message is theirs, answered at once.
        assert answer(await mcp.call_tool("wait_for_reply", {"conversation_id": conv, "timeout": 1}))["reply"]["messageId"] == reply["messageId"]

        thread = answer(await mcp.call_tool("get_thread", {"conversation_id": conv}))
        assert [m["direction"] for m in thread["messages"]] == ["outbound", "inbound"] and "html" not in thread["messages"][0]
        assert answer(await mcp.call_tool("list_threads", {"identity": handle}))["data"][0]["id"] == conv
        assert answer(await mcp.call_tool("search_messages", {"identity": handle, "query": "monday"}))["data"][0]["convId"] == conv
        answered = answer(await mcp.call_tool("reply_email", {"conversation_id": conv, "text": "Great", "idempotency_key": key + "-r"}))
        assert answered["messages"][0]["convId"] == conv

        tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        later = answer(await mcp.call_tool("send_email", {**args, "idempotency_key": key + "-l", "send_at": tomorrow}))
        cancelled = answer(await mcp.call_tool("cancel_scheduled", {"message_id": later["messages"][0]["messageId"]}))
        assert cancelled["status"] == "cancelled"
        draft = answer(await mcp.call_tool("create_draft", {**args, "idempotency_key": key + "-d"}))
        assert draft["status"] == "pending"

        refused = await mcp.call_tool("send_email", {**args, "identity": "nobody@example.test", "idempotency_key": key + "-x"})
        assert refused.isError and "404" in refused.content[0].text and "not found" in refused.content[0].text.lower()
        missing_key = await mcp.call_tool("send_email", {k: v for k, v in args.items() if k != "idempotency_key"})
        assert missing_key.isError and "idempotency_key" in missing_key.content[0].text


@pytest.mark.parametrize("via", ["client", "mcp"])
async def test_the_example_agent_answers_the_mail_that_comes_and_stops(via: str, api: Api, relay: Relay, inbound: int) -> None:
    """examples/reply_agent.py, through the client and through the MCP tools: mail comes to the identity by
    SMTP, the agent answers it in its conversation (threaded) and exits 0."""
    handle, [mailbox] = await make_identity(api, relay)
    env = {
        **os.environ, "SENDSTREAM_API_URL": api.base, "SENDSTREAM_API_KEY": api.key,
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
    }  # fmt: skip
    agent = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "examples" / "reply_agent.py"), handle, "--timeout", "30", "--via", via,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    while line := await asyncio.wait_for(agent.stderr.readline(), 60):  # until its place in the feed is fixed
        if b"listening" in line:
            break
    question = EmailMessage()
    question["From"], question["To"], question["Subject"] = "lee@example.test", mailbox["email"], "Pricing?"
    question["Message-ID"] = f"<q-{uuid.uuid4().hex[:8]}@example.test>"
    question.set_content("How much for 40 seats?")
    await deliver(inbound, question, "lee@example.test", [mailbox["email"]])
    out, err = await asyncio.wait_for(agent.communicate(), 60)
    assert agent.returncode == 0, err.decode()[-2000:]
    said = json.loads(out.decode().splitlines()[-1])
    assert said["status"] == "accepted" and said["conversation"].startswith("conv_")
    [answer] = await relay.wait_for(1)
    assert answer.message["In-Reply-To"] == question["Message-ID"] and answer.message["To"] == "lee@example.test"


async def test_the_server_also_speaks_streamable_http(api: Api) -> None:
    from mcp.client.streamable_http import streamable_http_client  # noqa: PLC0415 - this test's transport only

    port = free_port()
    script = shutil.which("sendstream-mcp", path=os.path.dirname(sys.executable))
    server = await asyncio.create_subprocess_exec(
        script, "--http", str(port), env={**os.environ, "SENDSTREAM_API_URL": api.base, "SENDSTREAM_API_KEY": api.key},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await eventually(lambda: _listening(port), timeout=20)
        async with streamable_http_client(f"http://127.0.0.1:{port}/mcp") as (read, write, _), ClientSession(read, write) as mcp:
            await mcp.initialize()
            assert {t.name for t in (await mcp.list_tools()).tools} == TOOLS
            assert isinstance(answer(await mcp.call_tool("list_identities", {}))["data"], list)
    finally:
        server.terminate()
        await server.wait()


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True
