"""Idempotency-Key for every send, reply and forward (SPEC 3.4).

Same key and same request: the stored response is replayed byte for byte with
`Idempotent-Replayed: true`. Same key, different request: 409. Same key while the first is still
in flight: wait for it, then replay, or 409 if it takes too long. Keys live 24 hours, per organization.

The key row and the Kafka publish are a dual write. Every id the request creates (the request's
`event_id`, its message and conversation ids) derives from the row's seed, so whoever completes an
interrupted request (a retry after a crash, a timeout or a 503) publishes the very same event, and
the consumers' `event_id` tracking drops the copy. The row is therefore never deleted before it
expires: a failure releases its lock instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

import asyncpg
import structlog
from aiohttp import web

from schemas.ids import new_id
from services.common.broker import is_transient
from services.ingress.http import ApiError, Call

log = structlog.get_logger("sendstream.ingress.idempotency")
KEY_TTL = timedelta(hours=24)
HEADER = "Idempotency-Key"


class IdSource:
    """New ids for one request: random, or derived from the idempotency seed so a retry repeats them."""

    def __init__(self, seed: uuid.UUID | None = None, repeated: bool = False):
        self.seed = seed
        self.repeated = repeated  # an earlier attempt with this key may have published already

    def __call__(self, label: str) -> uuid.UUID:
        return uuid.uuid5(self.seed, label) if self.seed else new_id()


def fingerprint(request: web.Request, raw_body: bytes) -> bytes:
    try:
        canonical = json.dumps(json.loads(raw_body), sort_keys=True, separators=(",", ":"))
    except ValueError:
        canonical = raw_body.decode(errors="replace")
    return hashlib.sha256(f"{request.method} {request.path}\n{canonical}".encode()).digest()


def read_key(request: web.Request) -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not key.isascii() or not key.isprintable():
        raise ApiError(400, "invalid_request", f"{HEADER} must be 1 to 255 printable ASCII characters")
    return key


async def _claim(
    pool: asyncpg.Pool, org_id: uuid.UUID, key: str, fp: bytes, hold: float, seed: uuid.UUID
) -> asyncpg.Record | None:
    """Insert the row, or take over an expired or released one; None if someone else holds it."""
    return await pool.fetchrow(
        """INSERT INTO idempotency_keys (org_id, key, fingerprint, seed, state, locked_until, expires_at)
           VALUES ($1, $2, $3, $4, 'in_progress', now() + make_interval(secs => $5), now() + $6::interval)
           ON CONFLICT (org_id, key) DO UPDATE SET
               fingerprint = CASE WHEN idempotency_keys.expires_at < now() THEN EXCLUDED.fingerprint
                                  ELSE idempotency_keys.fingerprint END,
               seed = CASE WHEN idempotency_keys.expires_at < now() THEN EXCLUDED.seed ELSE idempotency_keys.seed END,
               state = CASE WHEN idempotency_keys.expires_at < now() THEN 'in_progress' ELSE idempotency_keys.state END,
               created_at = CASE WHEN idempotency_keys.expires_at < now() THEN now() ELSE idempotency_keys.created_at END,
               expires_at = CASE WHEN idempotency_keys.expires_at < now() THEN EXCLUDED.expires_at
                                 ELSE idempotency_keys.expires_at END,
               locked_until = EXCLUDED.locked_until
             WHERE idempotency_keys.expires_at < now()
                OR (idempotency_keys.state = 'in_progress' AND idempotency_keys.locked_until < now()
                    AND idempotency_keys.fingerprint = EXCLUDED.fingerprint)
           RETURNING seed""",
        org_id,
        key,
        fp,
        seed,
        hold,
        KEY_TTL,
    )


def _replay(row: asyncpg.Record) -> web.Response:
    return web.Response(
        body=row["response_body"],
        status=row["response_status"],
        content_type=row["response_type"],
        headers={"Idempotent-Replayed": "true"},
    )


async def idempotent(
    call: Call, pool: asyncpg.Pool, wait: float, run: Callable[[IdSource], Awaitable[web.Response]]
) -> web.Response:
    """Run `run` at most once per (organization, key) and request; replay what it answered."""
    key = read_key(call.request)
    if key is None:
        return await run(IdSource())
    org_id = call.principal.org_id
    fp = fingerprint(call.request, call.raw)
    hold = wait + 5  # how long one attempt may hold the key before a retry may take over
    deadline = time.monotonic() + wait
    while True:
        seed = new_id()
        try:
            claimed = await _claim(pool, org_id, key, fp, hold, seed)
        except Exception:  # it may have committed all the same (the answer lost with the connection)
            _release_soon(pool, org_id, key, hold)
            raise
        if claimed is not None:
            break
        row = await pool.fetchrow(
            """SELECT fingerprint, state, response_status, response_body, response_type
                 FROM idempotency_keys WHERE org_id = $1 AND key = $2""",
            org_id,
            key,
        )
        if row is None:
            continue  # expired and swept between the two statements
        if row["fingerprint"] != fp:
            raise ApiError(
                409, "idempotency_conflict", f"this {HEADER} was already used with a different request"
            )
        if row["state"] == "completed":
            return _replay(row)
        if time.monotonic() > deadline:
            raise ApiError(
                409, "idempotency_in_progress", f"a request with this {HEADER} is still in progress"
            )
        await asyncio.sleep(0.025)

    try:
        response = await run(IdSource(claimed["seed"], repeated=claimed["seed"] != seed))
    except BaseException:
        _release_soon(pool, org_id, key, hold)
        raise
    try:
        await pool.execute(
            """UPDATE idempotency_keys SET state = 'completed', response_status = $3, response_body = $4,
                      response_type = $5 WHERE org_id = $1 AND key = $2""",
            org_id,
            key,
            response.status,
            response.body,
            response.content_type,
        )
    except Exception as exc:
        # The request was carried out: its answer stands. A retry runs it again under the same seed,
        # which repeats its events (dropped as copies) instead of answering from the stored response.
        log.warning("could not store an idempotent response", error=repr(exc))
        _release_soon(pool, org_id, key, hold)
    return response


RELEASING: set[asyncio.Task] = set()


def _release_soon(pool: asyncpg.Pool, org_id: uuid.UUID, key: str, hold: float) -> None:
    """Let the next attempt take over at once; it repeats the same ids, so nothing is doubled."""
    release = asyncio.create_task(_release(pool, org_id, key, hold))
    RELEASING.add(release)
    release.add_done_callback(RELEASING.discard)


async def _release(pool: asyncpg.Pool, org_id: uuid.UUID, key: str, hold: float) -> None:
    """Unlock a key whose attempt failed. The failure is often the database's own (down, restarting):
    tried again until it takes, so a client retrying its request is not kept waiting for the whole
    hold once the database is back. (After the hold, the lock has lapsed anyway.)"""
    give_up_at, pause = time.monotonic() + hold, 0.1
    while True:
        try:
            await pool.execute(
                "UPDATE idempotency_keys SET locked_until = now() WHERE org_id = $1 AND key = $2", org_id, key
            )
            return
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() + pause >= give_up_at:
                return
            await asyncio.sleep(pause)
            pause = min(2 * pause, 2.0)


async def sweep_expired(pool: asyncpg.Pool) -> int:
    """Delete keys past their 24 hours; late deletion is harmless, early deletion never happens."""
    done = await pool.execute("DELETE FROM idempotency_keys WHERE expires_at < now()")
    return int(done.split()[-1])
