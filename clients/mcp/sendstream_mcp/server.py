"""The MCP server: sendstream's mail as tools for a model, on the official `mcp` SDK (FastMCP), through
the Python client. SPEC 3.6 names the tools. Each answers JSON text small enough for a model's context
(bodies trimmed to PREVIEW characters unless `full` is asked for); a refusal is a tool error carrying the
API's own message. Every tool that sends requires an `idempotency_key`: a model that retries a call
after a timeout repeats the key, and the mail goes once.

    sendstream-mcp                 # stdio, for an MCP client that starts it
    sendstream-mcp --http 8765     # streamable HTTP on 127.0.0.1:8765/mcp

Configured by SENDSTREAM_API_URL (default http://127.0.0.1:8080) and SENDSTREAM_API_KEY.
"""

from __future__ import annotations

import argparse
import json
from typing import Annotated, Any

import httpx
from mcp.server.fastmcp import FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from pydantic import BaseModel, Field
from sendstream_client import AsyncSendstream, SendstreamError

PREVIEW = 500  # characters of a body shown unless `full`

INSTRUCTIONS = """Email for agents. An identity (its handle is an address, e.g. alice@agents.example.test) sends
from a pool of mailboxes; each conversation stays on its mailbox. Send with send_email, answer in a
conversation with reply_email (by its id, conv_...), and wait for the other side's reply with
wait_for_reply instead of polling. Give every send an idempotency_key of your own (a task id, say): if you
call again with the same key, nothing is sent twice."""

Key = Annotated[str, Field(min_length=1, max_length=255, description="Your key for this send: the same key, the same mail, sent once.")]


def shown(value: BaseModel | None, *, full: bool = False) -> str:
    """A model as JSON text, its bodies trimmed unless `full`."""
    if value is None:
        return "null"
    return json.dumps(_trim(value.model_dump(mode="json", by_alias=True, exclude_none=True), full), ensure_ascii=False)


def _trim(value: Any, full: bool) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not full and k == "html":
                continue  # the text says the same, in fewer tokens
            if not full and k in ("text", "replyText") and isinstance(v, str) and len(v) > PREVIEW:
                v = v[:PREVIEW] + f"... [{len(v) - PREVIEW} more characters: ask again with full=true]"
            out[k] = _trim(v, full)
        return out
    if isinstance(value, list):
        return [_trim(v, full) for v in value]
    return value


def build(client: AsyncSendstream) -> FastMCP:
    """The server and its tools, over `client`."""
    server = FastMCP("sendstream", instructions=INSTRUCTIONS)

    async def call(coro: Any) -> Any:
        try:
            return await coro
        except SendstreamError as e:  # the API's own words, for the model to act on
            raise ToolError(f"{e.status} {e.type}: {e.message}") from None
        except httpx.HTTPError as e:
            raise ToolError(f"cannot reach sendstream at {client.base_url} (SENDSTREAM_API_URL): {e!r}") from None

    @server.tool()
    async def list_identities() -> str:
        """The identities (sender personas) this key may send as, with their daily caps."""
        return shown(await call(client.list_identities()))

    @server.tool()
    async def send_email(
        identity: Annotated[str, Field(description="The sending identity's handle.")],
        to: Annotated[list[str], Field(min_length=1, description="Recipients: each gets a message, a conversation of its own.")],
        subject: str,
        idempotency_key: Key,
        text: str | None = None,
        html: str | None = None,
        send_at: Annotated[str | None, Field(description="Send later: RFC 3339, or a local time with timezone.")] = None,
        timezone: Annotated[str | None, Field(description="IANA time zone of a local send_at.")] = None,
    ) -> str:
        """Send a new email from an identity (text and/or html). Answers each recipient's status and the
        conversation id (convId) to reply in or wait on."""
        if text is None and html is None:
            raise ToolError("text: give text, html, or both")
        return shown(await call(client.send(
            identity, to, subject, text=text, html=html, send_at=send_at, timezone=timezone, idempotency_key=idempotency_key,
        )))  # fmt: skip

    @server.tool()
    async def reply_email(
        conversation_id: Annotated[str, Field(description="The conversation (conv_...) to reply in.")],
        idempotency_key: Key,
        text: str | None = None,
        html: str | None = None,
    ) -> str:
        """Reply in a conversation: to its counterpart, from the mailbox it has used, threaded."""
        if text is None and html is None:
            raise ToolError("text: give text, html, or both")
        conversation = await call(client.get_conversation(conversation_id))
        return shown(await call(client.reply(
            conversation.identity, conversation_id, text=text, html=html, idempotency_key=idempotency_key,
        )))  # fmt: skip

    @server.tool()
    async def list_threads(
        identity: str, limit: Annotated[int, Field(ge=1, le=50)] = 10, cursor: str | None = None
    ) -> str:
        """An identity's conversations, most recently active first, each with its messages (bodies trimmed)."""
        return shown(await call(client.list_conversations(identity, limit=limit, cursor=cursor)))

    @server.tool()
    async def get_thread(conversation_id: str, full: bool = False) -> str:
        """A conversation and its messages in order; `full` for whole bodies."""
        return shown(await call(client.get_conversation(conversation_id)), full=full)

    @server.tool()
    async def search_messages(
        identity: str, query: str, limit: Annotated[int, Field(ge=1, le=50)] = 10, full: bool = False
    ) -> str:
        """An identity's messages matching every word of `query`, best first."""
        return shown(await call(client.search_messages(identity, query, limit=limit)), full=full)

    @server.tool()
    async def wait_for_reply(
        conversation_id: Annotated[str | None, Field(description="Wait for a reply in this conversation...")] = None,
        identity: Annotated[str | None, Field(description="...or for any mail to this identity.")] = None,
        timeout: Annotated[int, Field(ge=1, le=30, description="Seconds to wait at most.")] = 30,
        after: Annotated[str | None, Field(description="The cursor a previous wait answered: wait from there, missing nothing.")] = None,
        full: bool = False,
    ) -> str:
        """Wait (up to `timeout` s) for the next message received in a conversation, or by an identity.
        Answers {"reply": the message or null, "cursor"}: to keep waiting, call again with `after` = cursor.
        A conversation whose latest message is already theirs answers that message at once."""
        if (conversation_id is None) == (identity is None):
            raise ToolError("conversation_id: give conversation_id or identity (one of them)")
        if conversation_id is not None and after is None:
            conversation = await call(client.get_conversation(conversation_id))
            latest = conversation.messages[-1] if conversation.messages else None
            if latest is not None and latest.direction == "inbound":  # came before this wait began
                reply = {
                    "messageId": latest.message_id, "conversationId": conversation.id, "from": latest.from_,
                    "subject": latest.subject, "text": latest.reply_text or latest.text, "autoReply": latest.auto_reply,
                    "occurredAt": latest.created_at,
                }  # fmt: skip
                return json.dumps({"reply": _trim(reply, full), "cursor": None}, ensure_ascii=False)
        got = await call(client.wait_for_reply(conversation=conversation_id, identity=identity, timeout=timeout, after=after))
        if got.message is None:
            return json.dumps({"reply": None, "cursor": got.cursor})
        event = got.message
        message = event.event.get("payload", {}).get("message", {})
        content = message.get("content", {})
        reply = {
            "messageId": event.message_id, "conversationId": event.conv_id, "from": message.get("from_addr"),
            "subject": content.get("subject"), "text": message.get("reply_text") or content.get("text"),
            "autoReply": message.get("auto_reply", False), "occurredAt": event.occurred_at,
        }  # fmt: skip
        if reply["text"] is None:
            reply["text"] = "[the body is large: get_thread with full=true shows it]"
        return json.dumps({"reply": _trim(reply, full), "cursor": got.cursor}, ensure_ascii=False)

    @server.tool()
    async def create_draft(
        identity: str,
        to: Annotated[list[str], Field(min_length=1)],
        subject: str,
        idempotency_key: Key,
        text: str | None = None,
        html: str | None = None,
        send_at: str | None = None,
        timezone: str | None = None,
    ) -> str:
        """Keep an email as a draft for a person to approve: nothing is sent until they do."""
        return shown(await call(client.create_draft(
            identity, to, subject, text=text, html=html, send_at=send_at, timezone=timezone,
            idempotency_key=idempotency_key,
        )))  # fmt: skip

    @server.tool()
    async def cancel_scheduled(message_id: Annotated[str, Field(description="The scheduled message (msg_...).")]) -> str:
        """Cancel a send scheduled for later (or held in a draft); an error once it went out."""
        return shown(await call(client.cancel(message_id)))

    return server


def main() -> None:
    parser = argparse.ArgumentParser(prog="sendstream-mcp", description=__doc__.split("\n\n")[0])
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP on 127.0.0.1:PORT/mcp")
    args = parser.parse_args()
    try:
        client = AsyncSendstream()
    except ValueError as e:  # no key
        parser.error(str(e))
    server = build(client)
    if args.http:
        server.settings.port = args.http
        server.run(transport="streamable-http")
    else:
        server.run(transport="stdio")


if __name__ == "__main__":
    main()
