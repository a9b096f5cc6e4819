"""The user's commands of `sendstream` (services/mailcli.py) as a person or a script runs them, against
the real stack: send, then `tail` shows its events; reply, list, show; `wait` hears a reply that came in
by SMTP; every `--json` output parses."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys

import pytest

from tests.conftest import Api, Relay, deliver
from tests.integration.test_inbound import reply_to
from tests.integration.test_send import make_identity

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def sendstream(api: Api, *args: str, timeout: float = 60) -> tuple[int, str, str]:
    script = shutil.which("sendstream", path=os.path.dirname(sys.executable))
    assert script, "the sendstream command is not installed"
    proc = await asyncio.create_subprocess_exec(
        script, *args, env={**os.environ, "SENDSTREAM_API_URL": api.base, "SENDSTREAM_API_KEY": api.key},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


async def test_send_tail_reply_list_show_and_wait(api: Api, relay: Relay, inbound: int) -> None:
    handle, [mailbox] = await make_identity(api, relay)
    tail = asyncio.ensure_future(sendstream(api, "tail", "--types", "SendRequested,MessageSent", "--count", "2", "--json"))
    await asyncio.sleep(1.5)  # the stream starts from now
    code, out, err = await sendstream(api, "send", handle, "ana@example.test", "--subject", "Hi", "--text", "Hello", "--json")
    assert code == 0, err
    answer = json.loads(out)
    [message] = answer["messages"]
    assert answer["accepted"] == 1 and message["status"] == "accepted"
    code, out, err = await tail
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["type"] for e in events] == ["SendRequested", "MessageSent"]

    conv = message["convId"]
    code, out, _ = await sendstream(api, "reply", conv, "--text", "Following up", "--key", "f-1", "--json")
    assert code == 0 and json.loads(out)["messages"][0]["convId"] == conv
    code, out, _ = await sendstream(api, "list", handle, "--json")
    assert code == 0 and [c["id"] for c in json.loads(out)["data"]] == [conv]
    code, out, _ = await sendstream(api, "show", conv)
    assert code == 0 and "Hello" in out and "Following up" in out

    [first, _] = await relay.wait_for(2)
    waiting = asyncio.ensure_future(sendstream(api, "wait", "--conversation", conv, "--timeout", "20", "--json"))
    await asyncio.sleep(1.5)
    await deliver(inbound, reply_to(first.message, "ana@example.test", mailbox["email"], "Got it"), "ana@example.test", [mailbox["email"]])
    code, out, err = await waiting
    assert code == 0, err
    assert json.loads(out)["event"]["payload"]["message"]["from_addr"] == "ana@example.test"

    code, out, _ = await sendstream(api, "wait", "--identity", handle, "--timeout", "1")
    assert code == 1  # nothing more came
    code, _, err = await sendstream(api, "show", "conv_00000000000000000000000000000000")
    assert code == 1 and "404" in err
