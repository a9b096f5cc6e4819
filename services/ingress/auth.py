"""API keys: `sk_live_…`, shown once, stored as sha256; organizations; the operator bootstrap key."""

from __future__ import annotations

import hashlib
import secrets
from uuid import UUID

import asyncpg
from aiohttp import web

from schemas.ids import new_id
from services.ingress.cache import Cache
from services.ingress.http import ApiError, Principal

ALL_SCOPES = ["send", "read", "admin", "approve"]
OPERATOR_ORG = "default"


def new_key() -> str:
    return "sk_live_" + secrets.token_urlsafe(32)


def key_hash(key: str) -> bytes:
    """Keys carry 256 random bits, so a plain sha256 is a safe at-rest form (no slow KDF needed)."""
    return hashlib.sha256(key.encode()).digest()


async def store_key(
    conn: asyncpg.Connection | asyncpg.Pool, org_id: UUID, key: str, scopes: list[str]
) -> UUID:
    key_id = new_id()
    await conn.execute(
        """INSERT INTO api_keys (id, org_id, key_hash, key_prefix, scopes) VALUES ($1, $2, $3, $4, $5)""",
        key_id,
        org_id,
        key_hash(key),
        key[:12],
        scopes,
    )
    return key_id


async def create_organization(
    pool: asyncpg.Pool, name: str, *, is_operator: bool = False
) -> tuple[UUID, str]:
    """A new organization and its first admin key (returned once, in clear)."""
    org_id, key = new_id(), new_key()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO organizations (id, name, is_operator) VALUES ($1, $2, $3)", org_id, name, is_operator
        )
        await store_key(conn, org_id, key, ALL_SCOPES)
    return org_id, key


async def ensure_bootstrap_key(pool: asyncpg.Pool, key: str) -> None:
    """Idempotently ensure the operator organization `default` exists and `key` is one of its admin keys."""
    async with pool.acquire() as conn, conn.transaction():
        org_id = await conn.fetchval(
            """INSERT INTO organizations (id, name, is_operator) VALUES ($1, $2, true)
               ON CONFLICT (name) WHERE is_operator DO UPDATE SET name = EXCLUDED.name RETURNING id""",
            new_id(),
            OPERATOR_ORG,
        )
        await conn.execute(
            """INSERT INTO api_keys (id, org_id, key_hash, key_prefix, scopes) VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (key_hash) DO NOTHING""",
            new_id(),
            org_id,
            key_hash(key),
            key[:12],
            ALL_SCOPES,
        )


def principal_cache_key(hashed: bytes) -> str:
    return "key:" + hashed.hex()


def presented_key(request: web.Request) -> str | None:
    """The key a request carries: `Authorization: Bearer <key>`, or `X-API-Key: <key>` (the mailboxes
    dialect's clients send that one); a WebSocket's handshake may carry it as `?api_key=` (browsers'
    WebSockets cannot set headers)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token
    handshake = request.method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket"
    if handshake and request.query.get("api_key", "").strip():
        return request.query["api_key"].strip()
    return request.headers.get("X-API-Key", "").strip() or None


async def authenticate(request: web.Request, pool: asyncpg.Pool, cache: Cache) -> Principal:
    token = presented_key(request)
    if token is None:
        raise ApiError(
            401, "unauthorized", "missing API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"
        )
    hashed = key_hash(token.strip())
    if (cached := cache.get(principal_cache_key(hashed))) is not None:
        return cached
    row = await pool.fetchrow(
        """SELECT k.id, k.org_id, k.scopes, o.is_operator
             FROM api_keys k JOIN organizations o ON o.id = k.org_id
            WHERE k.key_hash = $1 AND k.revoked_at IS NULL""",
        hashed,
    )
    if row is None:
        raise ApiError(401, "unauthorized", "invalid or revoked API key")
    principal = Principal(row["org_id"], row["id"], frozenset(row["scopes"]), row["is_operator"])
    cache.put(principal_cache_key(hashed), principal)
    return principal
