"""The dashboard asks the API, as any client does: over HTTP, to this very ingress, with the session's
key. So a page can show only what the API would answer that key (the same routes, scopes, tenancy and
errors), and the dashboard never reads or writes PostgreSQL behind the API's back."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import aiohttp
from aiohttp import web

from services.ingress.http import REQUEST_ID

CLIENT = web.AppKey("ui_http", aiohttp.ClientSession)


class ApiFailure(Exception):
    """The API's refusal: its status, error type and message (which names the field at fault)."""

    def __init__(self, status: int, type_: str, message: str):
        super().__init__(message)
        self.status, self.type, self.message = status, type_, message


def own_origin(request: web.Request) -> str:
    """This server as the request reached it (the address it was accepted on): loopback, never a proxy."""
    host, port = request.transport.get_extra_info("sockname")[:2]  # type: ignore[union-attr]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Api:
    def __init__(self, request: web.Request, key: str):
        self.http = request.config_dict[CLIENT]
        self.origin = own_origin(request)
        self.headers = {"Authorization": f"Bearer {key}", "X-Request-Id": request[REQUEST_ID]}

    async def call(
        self, method: str, path: str, *, query: dict[str, str] | None = None, body: Any = None,
        idempotent: bool = False,
    ) -> Any:  # fmt: skip
        headers = dict(self.headers)
        if idempotent:  # one click, one send: a retry of this very request would carry the same key
            headers["Idempotency-Key"] = str(uuid4())
        async with self.http.request(
            method, self.origin + path, params={k: v for k, v in (query or {}).items() if v}, headers=headers,
            json=body,
        ) as response:  # fmt: skip
            data = await response.json(content_type=None) if response.status != 204 else None
            if response.status >= 400:
                error = (data or {}).get("error") or {}
                raise ApiFailure(response.status, error.get("type", "error"), error.get("message", response.reason))
            return data

    async def get(self, path: str, **query: str) -> Any:
        return await self.call("GET", path, query=query)

    async def events(self) -> AsyncIterator[str]:
        """The organization's event types as they happen (the API's Server-Sent Events, from now on); an
        empty string once the stream is open and for each keep-alive."""
        async with self.http.get(
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
    async with aiohttp.ClientSession(json_serialize=json.dumps) as http:
        app[CLIENT] = http
        yield
