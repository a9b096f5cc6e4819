"""The dashboard asks the API, as any client does: over HTTP, to this very ingress, with the session's
key. So a page can show only what the API would answer that key (the same routes, scopes, tenancy and
errors), and the dashboard never reads or writes PostgreSQL behind the API's back."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from services.common.settings import IngressSettings
from services.ingress.context import CONTEXT
from services.ingress.http import REQUEST_ID

CLIENT = web.AppKey("ui_http", aiohttp.ClientSession)  # the pages' requests: short, pooled
STREAMS = web.AppKey("ui_streams", aiohttp.ClientSession)  # the live pages' event streams: long, unpooled
TIMEOUT = aiohttp.ClientTimeout(total=30)


class ApiFailure(Exception):
    """The API's refusal: its status, error type and message (which names the field at fault), and its
    whole answer (`data`: some refusals answer with a body of their own)."""

    def __init__(self, status: int, type_: str, message: str, data: Any = None):
        super().__init__(message)
        self.status, self.type, self.message, self.data = status, type_, message, data


def own_origin(settings: IngressSettings) -> str:
    """This ingress on the address it listens on (loopback when it listens on every address)."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(settings.http_host, settings.http_host)
    return f"http://[{host}]:{settings.http_port}" if ":" in host else f"http://{host}:{settings.http_port}"


def refusals(data: Any) -> str | None:
    """Why a send's every recipient was refused (its 429 answers with the send's body, not an error)."""
    sent = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(sent, list) or not sent:
        return None
    return "refused: " + "; ".join(f"{m.get('to', '')}: {m.get('reason') or m.get('status')}" for m in sent if isinstance(m, dict))


class Api:
    def __init__(self, request: web.Request, key: str):
        self.request = request
        self.origin = own_origin(request.config_dict[CONTEXT].settings)
        self.headers = {"Authorization": f"Bearer {key}", "X-Request-Id": request[REQUEST_ID]}

    async def call(
        self, method: str, path: str, *, query: dict[str, str] | None = None, body: Any = None,
        idempotency_key: str | None = None,
    ) -> Any:  # fmt: skip
        headers = {**self.headers, "Idempotency-Key": idempotency_key} if idempotency_key else self.headers
        async with self.request.config_dict[CLIENT].request(
            method, self.origin + path, params={k: v for k, v in (query or {}).items() if v}, headers=headers,
            json=body, timeout=TIMEOUT,
        ) as response:  # fmt: skip
            text = await response.text()
            try:
                data = json.loads(text) if text else None
            except ValueError:
                data = None
            if response.status >= 400:
                error = data.get("error") if isinstance(data, dict) else None
                error = error if isinstance(error, dict) else {}
                message = error.get("message") or refusals(data) or response.reason or "the API refused"
                raise ApiFailure(response.status, error.get("type", "error"), message, data)
            return data

    async def get(self, path: str, **query: str) -> Any:
        return await self.call("GET", path, query=query)

    async def events(self) -> AsyncIterator[str]:
        """The organization's event types as they happen (the API's Server-Sent Events, from now on); an
        empty string once the stream is open and for each keep-alive."""
        async with self.request.config_dict[STREAMS].get(
            self.origin + "/v1/events/stream", headers=self.headers, timeout=aiohttp.ClientTimeout(total=None)
        ) as response:
            if response.status >= 400:
                raise ApiFailure(response.status, "error", "the event stream is not available")
            yield ""  # open
            async for line in response.content:
                if line.startswith(b"event: "):
                    yield line[7:].decode().strip()
                elif line.startswith(b": keep-alive"):
                    yield ""


async def client_context(app: web.Application):
    async with (
        aiohttp.ClientSession(json_serialize=json.dumps) as pages,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as streams,
    ):
        app[CLIENT], app[STREAMS] = pages, streams
        yield
