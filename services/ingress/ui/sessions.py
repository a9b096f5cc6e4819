"""The dashboard's sessions: opened with an API key, kept in PostgreSQL, carried by an HttpOnly,
SameSite=Strict cookie.

The cookie holds a random token (only its sha256 is stored). The session keeps the key it was opened
with, sealed under SENDSTREAM_SECRET_KEYS, and every page asks the API with it (services/ingress/ui/api.py):
a session sees exactly what its key's organization may see, and ends when the key is revoked. Forms are
CSRF-protected by WTForms' session CSRF (HMAC tokens bound to the session's `csrf_seed`); the login form,
before any session, by a seed in a short-lived cookie of its own.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
from aiohttp import web

from services.common.domain import signed
from services.ingress.auth import key_hash
from services.ingress.context import CONTEXT, Context
from services.ingress.core.errors import Unavailable

COOKIE = "sendstream_session"
LOGIN_COOKIE = "sendstream_login"
TTL = timedelta(hours=12)
LOGIN_TTL = timedelta(hours=1)
PATH = "/ui"


@dataclass(frozen=True)
class Session:
    token_hash: bytes
    key: str  # the API key the session acts with
    csrf: dict[str, str]  # WTForms' CSRF context: {"csrf": the session's seed}


def _hashed(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def csrf_secret(c: Context) -> bytes:
    key = signed.key_for(c.settings, "dashboard csrf")
    if key is None or c.secrets.fernet is None:
        raise Unavailable("the dashboard needs SENDSTREAM_SECRET_KEYS (it keeps each session's API key sealed)")
    return key


async def start(c: Context, key: str) -> str | None:
    """A new session for `key` (the token for its cookie), or None if `key` is no valid API key."""
    csrf_secret(c)
    row = await c.pool.fetchrow(
        "SELECT id, org_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL", key_hash(key)
    )
    if row is None:
        return None
    token = secrets.token_urlsafe(32)
    await c.pool.execute(
        """INSERT INTO ui_sessions (token_hash, org_id, key_id, sealed_key, csrf_seed, expires_at)
           VALUES ($1, $2, $3, $4, $5, now() + $6::interval)""",
        _hashed(token), row["org_id"], row["id"], c.secrets.seal(key), secrets.token_hex(32), TTL,
    )  # fmt: skip
    return token


async def current(c: Context, request: web.Request) -> Session | None:
    """The request's live session (its cookie's, unexpired, its key not revoked), if it has one."""
    token = read_cookie(request, COOKIE)
    if not token:
        return None
    row = await c.pool.fetchrow(
        """SELECT s.token_hash, s.sealed_key, s.csrf_seed FROM ui_sessions s
             JOIN api_keys k ON k.id = s.key_id
            WHERE s.token_hash = $1 AND s.expires_at > now() AND k.revoked_at IS NULL""",
        _hashed(token),
    )
    if row is None:
        return None
    return Session(row["token_hash"], c.secrets.open(row["sealed_key"]), {"csrf": row["csrf_seed"]})


async def end(pool: asyncpg.Pool, session: Session) -> None:
    await pool.execute("DELETE FROM ui_sessions WHERE token_hash = $1", session.token_hash)


async def sweep(pool: asyncpg.Pool) -> None:
    await pool.execute("DELETE FROM ui_sessions WHERE expires_at < now()")


def over_https(request: web.Request) -> bool:
    """Reached over HTTPS, directly or through a proxy that ends TLS (SENDSTREAM_PUBLIC_BASE_URL says https)."""
    return request.secure or request.config_dict[CONTEXT].settings.public_base_url.startswith("https:")


def cookie(request: web.Request, name: str) -> tuple[str, str]:
    """A cookie's name and path. Over HTTPS a `__Host-` name (Secure, Path=/, no Domain): no other host,
    port or path of the site can set it, so nobody plants a session or a login seed in this browser.
    Over plain HTTP (make run) the bare name, scoped to /ui."""
    return (f"__Host-{name}", "/") if over_https(request) else (name, PATH)


def read_cookie(request: web.Request, name: str) -> str | None:
    return request.cookies.get(cookie(request, name)[0])


def set_cookie(response: web.StreamResponse, request: web.Request, name: str, value: str, ttl: timedelta) -> None:
    """HttpOnly, SameSite=Strict, and Secure over HTTPS."""
    full, path = cookie(request, name)
    response.set_cookie(
        full, value, path=path, max_age=int(ttl.total_seconds()), httponly=True, samesite="Strict",
        secure=over_https(request),
    )  # fmt: skip


def drop_cookie(response: web.StreamResponse, request: web.Request, name: str) -> None:
    full, path = cookie(request, name)
    response.del_cookie(full, path=path)


def login_context(request: web.Request, response_cookies: dict[str, str]) -> dict[str, str]:
    """The login form's CSRF context: the seed of its cookie, or a new one (to be set, in `response_cookies`)."""
    seed = read_cookie(request, LOGIN_COOKIE)
    if not seed or len(seed) != 64:
        seed = response_cookies[LOGIN_COOKIE] = secrets.token_hex(32)
    return {"csrf": seed}
