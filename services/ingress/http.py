"""HTTP plumbing of the ingress: the route registry, JSON errors, body validation, middlewares.

Every route is declared once with `@route(...)`: method, path, required scope, body model, response
model. The registry wires aiohttp, enforces authentication, and is what /openapi.json is built from,
so the document cannot drift from the routes.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ValidationError

from schemas.api.common import ErrorBody
from schemas.dialect import ErrorShape as Shape
from services.common.broker import is_transient
from services.ingress.core.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    TooLarge,
    Unavailable,
)

log = structlog.get_logger("sendstream.ingress")

ErrorShape = type[Shape]  # a dialect's error body (the operator routes answer ErrorBody)

HTTP_REQUESTS = Counter("sendstream_http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "sendstream_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class ApiError(Exception):
    """An error answered as `{"error": {"type", "message"}}` with an HTTP status."""

    def __init__(self, status: int, type_: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.type, self.message, self.headers = status, type_, message, headers or {}


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def error_response(
    status: int,
    type_: str,
    message: str,
    headers: dict[str, str] | None = None,
    shape: ErrorShape = ErrorBody,
) -> web.Response:
    """Every error answer, in one place: the route's dialect picks the shape."""
    body = shape.of(type_, message).model_dump_json().encode()
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each offending field: `to[1]: is not a valid email address (...)`."""
    parts = []
    for err in exc.errors()[:3]:
        loc = ""
        for part in err["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "is not a known field"
        elif err["type"] == "missing":
            msg = "is required"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


@dataclass
class Principal:
    """Who is calling: the organization and the scopes of the key used."""

    org_id: uuid.UUID
    key_id: uuid.UUID
    scopes: frozenset[str]
    is_operator: bool

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


@dataclass
class Call:
    """One request as a handler sees it: already authenticated and with its body validated."""

    request: web.Request
    principal: Principal | None
    body: Any
    raw: bytes = b""  # the body as sent (read once: the request's stream is consumed)

    @property
    def app(self) -> web.Application:
        return self.request.app

    def param(self, name: str) -> str:
        return self.request.match_info[name]

    @property
    def request_id(self) -> str:
        return self.request[REQUEST_ID]


Handler = Callable[[Call], Awaitable[web.StreamResponse]]
Authenticate = Callable[[web.Request], Awaitable[Principal]]


@dataclass(frozen=True)
class RouteSpec:
    method: str
    path: str
    handler: Handler
    scope: str | None  # None: public
    body: type[BaseModel] | None
    response: type[BaseModel] | None
    status: int
    summary: str
    tag: str
    errors: tuple[int, ...]
    idempotent: bool  # takes an Idempotency-Key header
    answers: dict[int, type[BaseModel]]  # error statuses whose body is not the error shape
    nouns: dict[str, str]  # the dialect's word for each kind of thing the core may not find
    error_body: ErrorShape  # the dialect's error shape
    extra_body: int  # bytes this route's body may have beyond the configured limit (attached files)
    operation_suffix: str  # set on a second path of the same operation, to keep its operationId unique
    body_optional: bool = False  # no body at all reads as `{}` (a client that sends none when it sets nothing)


ROUTES: list[RouteSpec] = []


def route(
    method: str,
    path: str,
    *,
    scope: str | None,
    summary: str,
    tag: str,
    body: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    status: int = 200,
    errors: tuple[int, ...] = (),
    idempotent: bool = False,
    answers: dict[int, type[BaseModel]] | None = None,
    nouns: dict[str, str] | None = None,
    error_body: ErrorShape = ErrorBody,
    extra_body: int = 0,
    operation_suffix: str = "",
    body_optional: bool = False,
) -> Callable[[Handler], Handler]:
    def decorator(fn: Handler) -> Handler:
        spec = RouteSpec(
            method=method, path=path, handler=fn, scope=scope, body=body, response=response, status=status,
            summary=summary, tag=tag, errors=errors, idempotent=idempotent, answers=answers or {},
            nouns=nouns or {}, error_body=error_body, extra_body=extra_body, operation_suffix=operation_suffix,
            body_optional=body_optional,
        )  # fmt: skip
        ROUTES.append(spec)
        return fn

    return decorator


MAX_JSON_DEPTH = 32
MAX_BODY = web.AppKey("max_body", int)


def _check_text(value: str, where: str) -> None:
    """NUL (which PostgreSQL cannot store) and lone surrogates (which no UTF-8 encoder takes) are refused
    in every string of a body; they could only fail later, where the client no longer hears of it."""
    if "\0" in value:
        raise ApiError(400, "invalid_request", f"{where}: must not contain NUL characters (U+0000)")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ApiError(
                400, "invalid_request", f"{where}: contains an unpaired surrogate (not valid Unicode)"
            ) from None


def check_json(value: Any, where: str = "", depth: int = 0) -> None:
    """Every string of a parsed body is storable text, and the body nests at most MAX_JSON_DEPTH deep."""
    if depth > MAX_JSON_DEPTH:
        raise ApiError(400, "invalid_request", f"request body nests deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        _check_text(value, where or "request body")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_text(k, f"{where}.{k}" if where else "field name")
            check_json(v, f"{where}.{k}" if where else k, depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_json(v, f"{where}[{i}]", depth + 1)


def body_too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"request body exceeds the limit of {limit} bytes")


async def read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, or 413 (as JSON, naming the limit) as soon as it exceeds `limit`: a body is never
    buffered past its route's limit, declared length or not."""
    if (request.content_length or 0) > limit:
        raise body_too_large(limit)
    chunks, size = [], 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def query_limit(call: Call, default: int) -> int:
    """The `limit` query parameter of a listing: a whole number from 1 to 100."""
    text = call.request.query.get("limit", str(default))
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise ApiError(400, "invalid_request", "limit: must be an integer from 1 to 100")
    return int(text)


def parse_body(raw: bytes, model: type[BaseModel]) -> BaseModel:
    try:
        data = json.loads(raw) if raw else None
    except RecursionError:
        raise ApiError(
            400, "invalid_request", f"request body nests deeper than {MAX_JSON_DEPTH} levels"
        ) from None
    except ValueError:
        raise ApiError(400, "invalid_request", "request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_request", "request body must be a JSON object")
    check_json(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, "invalid_request", describe_validation_error(exc)) from None


def add_routes(
    app: web.Application, authenticate: Authenticate, admit: Callable[[], AbstractContextManager[None]]
) -> None:
    """Serve every declared route; sends (the routes taking an Idempotency-Key) run only once `admit`
    lets them (services/ingress/admission.py), before anything else is done for them."""
    for spec in ROUTES:

        async def handle(request: web.Request, spec: RouteSpec = spec) -> web.StreamResponse:
            try:
                if spec.idempotent:
                    with admit():
                        return await answer(request, spec)
                return await answer(request, spec)
            except ApiError as exc:
                return error_response(exc.status, exc.type, exc.message, exc.headers, spec.error_body)

        async def answer(request: web.Request, spec: RouteSpec) -> web.StreamResponse:
            principal = None
            if spec.scope is not None:
                principal = await authenticate(request)
                if not principal.allows(spec.scope):
                    raise ApiError(403, "forbidden", f"this API key lacks the `{spec.scope}` scope")
            for name, value in request.match_info.items():
                _check_text(value, name)
            for name, value in request.query.items():
                _check_text(name, "query parameter name")
                _check_text(value, name)
            raw, body = b"", None
            if spec.body is not None:
                raw = await read_body(request, request.app[MAX_BODY] + spec.extra_body)
                body = parse_body(raw or (b"{}" if spec.body_optional else raw), spec.body)
            try:
                return await spec.handler(Call(request, principal, body, raw))
            except NotFound as exc:  # the dialect words it: "Identity not found", "Inbox not found"
                noun = spec.nouns.get(exc.kind, exc.kind.capitalize())
                raise ApiError(404, "not_found", f"{noun} not found") from None
            except Conflict as exc:
                raise ApiError(409, "conflict", str(exc)) from None
            except Forbidden as exc:
                raise ApiError(403, "forbidden", str(exc)) from None
            except Invalid as exc:
                raise ApiError(400, "invalid_request", str(exc)) from None
            except TooLarge as exc:
                raise ApiError(413, "payload_too_large", str(exc)) from None
            except RateLimited as exc:
                raise ApiError(
                    429, "rate_limited", str(exc), {"Retry-After": str(exc.retry_after_s), **exc.headers}
                ) from None
            except Unavailable as exc:
                raise ApiError(503, "unavailable", str(exc), {"Retry-After": "1"}) from None

        app.router.add_route(spec.method, spec.path, handle)


def json_model(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=model.model_dump_json(by_alias=True).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


REQUEST_ID = web.RequestKey("request_id", str)
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@web.middleware
async def observe(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    """Request id, structured log context, JSON errors and metrics for every request."""
    given = request.headers.get("X-Request-Id", "")
    request[REQUEST_ID] = given if _VALID_REQUEST_ID.match(given) else str(uuid.uuid4())
    info = request.match_info.route.resource
    route_name = info.canonical if info is not None else "unmatched"
    started = time.perf_counter()
    with structlog.contextvars.bound_contextvars(correlation_id=request[REQUEST_ID]):
        try:
            response = await handler(request)
        except ApiError as exc:
            response = error_response(exc.status, exc.type, exc.message, exc.headers)
        except web.HTTPRequestEntityTooLarge:
            exc = body_too_large(request.app[MAX_BODY])
            response = error_response(exc.status, exc.type, exc.message)
        except web.HTTPNotFound:
            response = error_response(404, "not_found", "route not found")
        except web.HTTPMethodNotAllowed as exc:
            allowed = ", ".join(sorted(exc.allowed_methods))
            response = error_response(
                405,
                "method_not_allowed",
                f"{exc.method} is not allowed here (allowed: {allowed})",
                {"Allow": allowed},
            )
        except web.HTTPException:
            raise
        except Exception as exc:
            if is_transient(exc):
                log.warning(
                    "infrastructure unavailable", method=request.method, path=request.path, error=repr(exc)
                )
                response = error_response(
                    503,
                    "unavailable",
                    "the database or broker is unavailable; retry later",
                    {"Retry-After": "5"},
                )
            else:
                log.exception("unhandled error", method=request.method, path=request.path)
                response = error_response(500, "internal_error", "internal error")
        elapsed = time.perf_counter() - started
        response.headers["X-Request-Id"] = request[REQUEST_ID]
        HTTP_REQUESTS.labels(request.method, route_name, str(response.status)).inc()
        HTTP_LATENCY.labels(request.method, route_name).observe(elapsed)
        log.info(
            "http request",
            method=request.method,
            route=route_name,
            status=response.status,
            ms=round(elapsed * 1000, 2),
        )
        return response
