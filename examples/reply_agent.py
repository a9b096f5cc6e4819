"""A small agent on sendstream's Python client: it waits for mail to an identity, answers it in its
conversation, and stops. The answer's Idempotency-Key is made from the message it answers, so an agent
that crashes and runs again answers each message once.

    python examples/reply_agent.py IDENTITY [--timeout SECONDS] [--via mcp]

With `--via mcp` it does the same through sendstream's MCP server (sendstream-mcp, over stdio), as an
LLM agent's tools would. Configured by SENDSTREAM_API_URL and SENDSTREAM_API_KEY (`make run`'s key is
sk_live_localdev). Exits 0 once it answered, 1 if no mail came in time. It says "listening" (on stderr)
once it has a place in the feed: mail that comes after that is never missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys

from sendstream_client import AsyncSendstream

ANSWER = "Thanks for your message: a person will follow up within a day."


def listening(identity: str) -> None:
    print(f"listening for mail to {identity}", file=sys.stderr, flush=True)


async def with_client(identity: str, timeout: float) -> int:
    async with AsyncSendstream() as mail:
        first = await mail.wait_for_reply(identity=identity, timeout=1)  # a cursor: where "now" is in the feed
        listening(identity)
        got = first.message or (await mail.wait_for_reply(identity=identity, timeout=timeout, after=first.cursor)).message
        if got is None:
            print("no mail came", file=sys.stderr)
            return 1
        sent = await mail.reply(identity, got.conv_id, text=ANSWER, idempotency_key=f"answer:{got.message_id}")
        print(json.dumps({"answered": got.message_id, "conversation": got.conv_id, "status": sent.messages[0].status}))
        return 0


async def with_mcp(identity: str, timeout: float) -> int:
    from mcp import ClientSession, StdioServerParameters  # noqa: PLC0415 - only this path needs the MCP SDK
    from mcp.client.stdio import stdio_client  # noqa: PLC0415

    server = StdioServerParameters(command=shutil.which("sendstream-mcp") or "sendstream-mcp", env=dict(os.environ))
    async with stdio_client(server) as (read, write), ClientSession(read, write) as tools:
        await tools.initialize()
        loop = asyncio.get_running_loop()
        deadline, cursor = loop.time() + timeout, None
        while (left := deadline - loop.time()) > 0:
            wait = 1 if cursor is None else max(1, min(30, int(left)))  # the first: a cursor, soon
            asked = {"identity": identity, "timeout": wait, "after": cursor}
            waited = await tools.call_tool("wait_for_reply", {k: v for k, v in asked.items() if v is not None})
            if waited.isError:
                print(waited.content[0].text, file=sys.stderr)
                return 2
            answer = json.loads(waited.content[0].text)
            if cursor is None:
                listening(identity)
            got, cursor = answer["reply"], answer["cursor"]
            if got is None:
                continue
            conv = got["conversationId"]
            sent = await tools.call_tool(
                "reply_email", {"conversation_id": conv, "text": ANSWER, "idempotency_key": f"answer:{got['messageId']}"}
            )
            if sent.isError:
                print(sent.content[0].text, file=sys.stderr)
                return 2
            print(json.dumps({"answered": got["messageId"], "conversation": conv, "status": json.loads(sent.content[0].text)["messages"][0]["status"]}))
            return 0
        print("no mail came", file=sys.stderr)
        return 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("identity")
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--via", choices=["client", "mcp"], default="client")
    args = parser.parse_args()
    run = with_mcp if args.via == "mcp" else with_client
    sys.exit(asyncio.run(run(args.identity, args.timeout)))


if __name__ == "__main__":
    main()
