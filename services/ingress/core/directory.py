"""Identities and their accounts for every dialect: finding what a request names, for the caller's
organization only (identities cached per process), the conversation a reply continues, what an identity
has left of its daily cap; and creating and removing them, each change announced by its facts."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from schemas import ids
from schemas.dialect import ORIGINAL
from schemas.envelope import Envelope
from schemas.events import (
    Dialect,
    EntityRemovedPayload,
    IdentityCreated,
    IdentityDeleted,
    IdentityPayload,
    IdentityUpdated,
    MailboxAdded,
    MailboxHealthChanged,
    MailboxHealthPayload,
    MailboxPayload,
    MailboxRemoved,
    MailboxSyncChanged,
    MailboxSyncPayload,
    MailboxUpdated,
)
from schemas.limits import DEFAULT_HOURLY_LIMIT
from schemas.warmup import Warmup, warmup_of
from services.common import timers
from services.common.domain import views
from services.common.domain.timezones import local_day_start
from services.ingress.context import Context
from services.ingress.core import domains
from services.ingress.core.errors import Conflict, NotFound


def identity_cache_key(org_id: UUID, handle: str) -> str:
    return f"identity:{org_id}:{handle.lower()}"


async def find_identity(c: Context, org_id: UUID, handle: str) -> asyncpg.Record:
    """The organization's identity with this handle; NotFound if absent or another organization's."""
    key = identity_cache_key(org_id, handle)
    if (cached := c.cache.get(key)) is not None:
        return cached
    row = await c.pool.fetchrow(
        "SELECT * FROM identities WHERE org_id = $1 AND lower(handle) = lower($2) AND deleted_at IS NULL",
        org_id,
        handle,
    )
    if row is None:
        raise NotFound("identity")
    c.cache.put(key, row)
    return row


async def identity_named(c: Context, org_id: UUID, handle: str | None) -> asyncpg.Record | None:
    """The identity a listing is narrowed to by its `identity` query parameter (a handle), None when it
    names none; NotFound as `find_identity`."""
    return await find_identity(c, org_id, handle) if handle else None


async def wants_unsubscribe(c: Context, org_id: UUID, asked: bool | None) -> bool:
    """Whether a send carries one-click unsubscribe: as asked, else the organization's default."""
    if asked is not None:
        return asked
    key = f"org:{org_id}"
    if (cached := c.cache.get(key)) is None:
        cached = await c.pool.fetchrow("SELECT unsubscribe_default FROM organizations WHERE id = $1", org_id)
        c.cache.put(key, cached)
    return bool(cached and cached["unsubscribe_default"])


async def set_unsubscribe_default(c: Context, org_id: UUID, value: bool) -> asyncpg.Record:
    row = await c.pool.fetchrow(
        "UPDATE organizations SET unsubscribe_default = $2 WHERE id = $1 RETURNING *", org_id, value
    )
    await c.cache.invalidate(c.pool, f"org:{org_id}")
    return row


async def forget_identity(c: Context, row: asyncpg.Record) -> None:
    """After a change: every ingress process reads the identity afresh."""
    await c.cache.invalidate(c.pool, identity_cache_key(row["org_id"], row["handle"]))


async def _of_identity(c: Context, query: str, kind: str, thing_id: UUID | None, identity: asyncpg.Record):
    """The row `query` finds for ($1 = `thing_id`, $2 = the identity's id); none (an id that did not
    parse), or one of another identity or organization, is NotFound(`kind`)."""
    row = thing_id and await c.pool.fetchrow(query, thing_id, identity["id"])
    if not row:
        raise NotFound(kind)
    return row


async def find_thread(c: Context, identity: asyncpg.Record, conv_id: UUID | None) -> asyncpg.Record:
    """The conversation a reply continues."""
    query = "SELECT conv_id, counterpart, subject FROM threads WHERE conv_id = $1 AND identity_id = $2"
    return await _of_identity(c, query, "conversation", conv_id, identity)


async def find_message(c: Context, identity: asyncpg.Record, message_id: UUID | None) -> asyncpg.Record:
    """One of the identity's messages as the views show it; a deleted one, or none, is NotFound."""
    row = await views.inbox_message(c.pool, identity["org_id"], identity["id"], message_id)
    if row is None:
        raise NotFound("message")
    return row


async def remaining_today(c: Context, identity: asyncpg.Record) -> int:
    """Recipients the identity may still send to today, in its time zone."""
    day = local_day_start(datetime.now(UTC), identity["timezone"]).date()
    used = await c.pool.fetchval(
        "SELECT sent FROM identity_usage WHERE identity_id = $1 AND day = $2", identity["id"], day
    )
    return max(identity["daily_cap"] - (used or 0), 0)


# --- changes: identities and their accounts (the backing mailboxes) ---------------------------------


@dataclass(frozen=True)
class NewAccount:
    """A backing mailbox to add to an identity's pool: its address and SMTP relay."""

    email: str
    smtp_host: str
    smtp_port: int
    smtp_tls: str
    smtp_username: str | None = None
    smtp_password: str | None = None
    hourly_limit: int = DEFAULT_HOURLY_LIMIT
    daily_limit: int | None = None
    imap: Any = None  # the API's ImapSettings: where the mailbox's own mail is read back from
    warmup: Warmup | None = None

    @classmethod
    def through(cls, email: str, relay: Any, **limits: Any) -> NewAccount:
        """An account of `email` sending through `relay` (an API's `smtp` settings, or the default relay)."""
        return cls(
            email=email, smtp_host=relay.host, smtp_port=relay.port, smtp_tls=relay.tls,
            smtp_username=relay.username, smtp_password=relay.password, **limits,
        )  # fmt: skip


@contextlib.asynccontextmanager
async def change(c: Context) -> AsyncIterator[tuple[asyncpg.Connection, list[Envelope]]]:
    """A configuration change and the facts it announces, committed together.

    The facts go out through the durable timers (due at once): the scheduler publishes them, so a
    crash between the change and the publish loses neither."""
    facts: list[Envelope] = []
    async with c.pool.acquire() as conn, conn.transaction():
        yield conn, facts
        for fact in facts:
            await timers.schedule(conn, fact, fact.occurred_at)


def fact_envelope(identity: asyncpg.Record, correlation_id: str) -> dict[str, Any]:
    return {"org_id": identity["org_id"], "identity_id": identity["id"], "correlation_id": correlation_id}


def identity_fact(row: asyncpg.Record) -> IdentityPayload:
    return IdentityPayload(
        identity_id=row["id"], handle=row["handle"], daily_cap=row["daily_cap"], timezone=row["timezone"],
        require_approval=row["require_approval"],
    )  # fmt: skip


def account_fact(row: asyncpg.Record) -> MailboxPayload:
    return MailboxPayload(
        mailbox_id=row["id"],
        email=row["email"],
        hourly_limit=row["hourly_limit"],
        daily_limit=row["daily_limit"],
        health=row["health"],
        warmup=warmup_of(row),
    )


def _warmup_columns(warmup: Warmup | None) -> tuple:
    """A ramp as the mailboxes row keeps it (three NULLs: none)."""
    if warmup is None:
        return None, None, None
    return warmup.start_per_day, warmup.increase_per_day, warmup.started_at


def sync_fact(
    identity: asyncpg.Record, correlation_id: str, mailbox_id: UUID, imap: bool
) -> MailboxSyncChanged:
    return MailboxSyncChanged(
        **fact_envelope(identity, correlation_id),
        payload=MailboxSyncPayload(mailbox_id=mailbox_id, imap=imap),
    )


async def set_imap(
    c: Context, conn: asyncpg.Connection, identity: asyncpg.Record, mailbox_id: UUID, imap: Any,
    correlation_id: str, facts: list[Envelope],
) -> asyncpg.Record:  # fmt: skip
    """Give a mailbox its IMAP account (`imap`: the API's ImapSettings, its password sealed), or take it
    away (None); its sync starts over as `idle`, and the sync worker owning it hears of the change."""
    facts.append(sync_fact(identity, correlation_id, mailbox_id, imap is not None))
    return await conn.fetchrow(
        """UPDATE mailboxes SET imap_host = $2, imap_port = $3, imap_tls = $4, imap_username = $5,
                  imap_password = $6, sync_state = 'idle', sync_error = NULL, updated_at = now()
            WHERE id = $1 RETURNING *""",
        mailbox_id, imap and imap.host, imap and imap.port, imap and imap.tls, imap and imap.username,
        imap and c.secrets.seal(imap.password),
    )  # fmt: skip


async def _insert_account(
    c: Context, conn: asyncpg.Connection, identity: asyncpg.Record, account: NewAccount, correlation_id: str,
    facts: list[Envelope],
) -> asyncpg.Record:  # fmt: skip
    await domains.claim(conn, c.settings, identity["org_id"], account.email)
    try:
        async with conn.transaction():  # a savepoint: the conflict is reported, the transaction goes on
            row = await conn.fetchrow(
                """INSERT INTO mailboxes (id, org_id, identity_id, email, smtp_host, smtp_port, smtp_tls,
                                          smtp_username, smtp_password, hourly_limit, daily_limit,
                                          warmup_start_per_day, warmup_increase_per_day, warmup_started_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING *""",
                ids.new_id(), identity["org_id"], identity["id"], account.email, account.smtp_host,
                account.smtp_port, account.smtp_tls, account.smtp_username, c.secrets.seal(account.smtp_password),
                account.hourly_limit, account.daily_limit, *_warmup_columns(account.warmup),
            )  # fmt: skip
    except asyncpg.UniqueViolationError:
        raise Conflict(f"{account.email} is already in this identity's pool") from None
    if account.imap is not None:
        row = await set_imap(c, conn, identity, row["id"], account.imap, correlation_id, facts)
    facts.append(MailboxAdded(**fact_envelope(identity, correlation_id), payload=account_fact(row)))
    return row


async def create_identity(
    c: Context,
    org_id: UUID,
    handle: str,
    *,
    daily_cap: int,
    timezone: str,
    correlation_id: str,
    name: str | None = None,
    accounts: Sequence[NewAccount] = (),
    dialect: Dialect = ORIGINAL,
    client_id: str | None = None,
) -> tuple[asyncpg.Record, list[asyncpg.Record]]:
    """A new identity (every dialect's sender: an identity, an inbox, a mailbox) with its first accounts,
    announced with IdentityCreated and MailboxAdded. Forbidden at a domain the organization does not hold
    (services/ingress/core/domains.py), Conflict if the handle is taken."""
    try:
        async with change(c) as (conn, facts):
            await domains.claim(conn, c.settings, org_id, handle)
            identity = await conn.fetchrow(
                """INSERT INTO identities (id, org_id, handle, daily_cap, timezone, name, dialect, client_id)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *""",
                ids.new_id(), org_id, handle, daily_cap, timezone, name, dialect, client_id,
            )  # fmt: skip
            facts.append(
                IdentityCreated(**fact_envelope(identity, correlation_id), payload=identity_fact(identity))
            )
            rows = [await _insert_account(c, conn, identity, a, correlation_id, facts) for a in accounts]
    except asyncpg.UniqueViolationError:
        raise Conflict(f"handle {handle} is already taken") from None
    return identity, rows


async def add_account(
    c: Context, identity: asyncpg.Record, account: NewAccount, correlation_id: str
) -> asyncpg.Record:
    """Another account in the identity's pool; Conflict if its address is in the pool already."""
    async with change(c) as (conn, facts):
        return await _insert_account(c, conn, identity, account, correlation_id, facts)


async def delete_identity(c: Context, identity: asyncpg.Record, correlation_id: str) -> None:
    """The identity and its pool are gone for every dialect (their messages stay readable by id)."""
    async with change(c) as (conn, facts):
        await conn.execute("UPDATE identities SET deleted_at = now() WHERE id = $1", identity["id"])
        synced = await conn.fetch(
            """UPDATE mailboxes SET deleted_at = now() WHERE identity_id = $1 AND deleted_at IS NULL
               RETURNING id, imap_host IS NOT NULL AS imap""",
            identity["id"],
        )
        facts += [sync_fact(identity, correlation_id, m["id"], False) for m in synced if m["imap"]]
        facts.append(
            IdentityDeleted(
                **fact_envelope(identity, correlation_id), payload=EntityRemovedPayload(id=identity["id"])
            )
        )
    await forget_identity(c, identity)


async def find_identity_by_id(c: Context, org_id: UUID, identity_id: UUID | None) -> asyncpg.Record:
    """The organization's identity with this id; NotFound if absent, deleted or another organization's."""
    row = identity_id and await c.pool.fetchrow(
        "SELECT * FROM identities WHERE id = $1 AND org_id = $2 AND deleted_at IS NULL", identity_id, org_id
    )
    if not row:
        raise NotFound("identity")
    return row


async def list_identities(c: Context, org_id: UUID) -> list[asyncpg.Record]:
    return await c.pool.fetch(
        "SELECT * FROM identities WHERE org_id = $1 AND deleted_at IS NULL ORDER BY created_at, id", org_id
    )


async def accounts_of(c: Context, identity_ids: list[UUID]) -> dict[UUID, list[asyncpg.Record]]:
    """The live accounts of these identities, oldest first."""
    rows = await c.pool.fetch(
        """SELECT * FROM mailboxes WHERE identity_id = ANY($1::uuid[]) AND deleted_at IS NULL
            ORDER BY created_at, id""",
        identity_ids,
    )
    out: dict[UUID, list[asyncpg.Record]] = {i: [] for i in identity_ids}
    for r in rows:
        out[r["identity_id"]].append(r)
    return out


async def find_account(c: Context, identity: asyncpg.Record, mailbox_id: UUID | None) -> asyncpg.Record:
    """A live account of the identity's pool."""
    query = "SELECT * FROM mailboxes WHERE id = $1 AND identity_id = $2 AND deleted_at IS NULL"
    return await _of_identity(c, query, "mailbox", mailbox_id, identity)


async def update_identity(
    c: Context, identity: asyncpg.Record, correlation_id: str, *, daily_cap: int | None, timezone: str | None,
    require_approval: bool | None = None, name: str | None = None,
) -> asyncpg.Record:
    """The identity's daily cap or time zone changed (None: as it was), announced with IdentityUpdated."""
    async with change(c) as (conn, facts):
        row = await conn.fetchrow(
            """UPDATE identities SET daily_cap = coalesce($2, daily_cap), timezone = coalesce($3, timezone),
                      require_approval = coalesce($4, require_approval), name = coalesce($5, name),
                      updated_at = now()
                WHERE id = $1 RETURNING *""",
            identity["id"],
            daily_cap,
            timezone,
            require_approval,
            name,
        )
        facts.append(IdentityUpdated(**fact_envelope(row, correlation_id), payload=identity_fact(row)))
    await forget_identity(c, row)
    return row


@dataclass(frozen=True)
class AccountChanges:
    """What a request changes of an account; a field left out of `fields` or `smtp` stays as it is. In
    `smtp`, a password is the plain secret (sealed here) and None removes it."""

    fields: dict[str, Any]  # health, hourlyLimit, dailyLimit (None: no daily limit), warmup (None: none)
    smtp: dict[str, Any]  # host, port, tls, username, password
    imap: Any = None
    imap_set: bool = False  # the request names the IMAP account (None: removed)


async def update_account(
    c: Context, identity: asyncpg.Record, before: asyncpg.Record, changes: AccountChanges, correlation_id: str
) -> asyncpg.Record:
    """An account of the pool changed, announced with MailboxUpdated (and MailboxHealthChanged when its
    health did, and the sync fact when its IMAP account did)."""
    fields, smtp = changes.fields, changes.smtp
    async with change(c) as (conn, facts):
        row = await conn.fetchrow(
            """UPDATE mailboxes SET
                  health = coalesce($2, health),
                  hourly_limit = coalesce($3, hourly_limit),
                  daily_limit = CASE WHEN $4 THEN $5 ELSE daily_limit END,
                  smtp_host = coalesce($6, smtp_host), smtp_port = coalesce($7, smtp_port),
                  smtp_tls = coalesce($8, smtp_tls),
                  smtp_username = CASE WHEN $9 THEN $10 ELSE smtp_username END,
                  smtp_password = CASE WHEN $11 THEN $12 ELSE smtp_password END,
                  warmup_start_per_day = CASE WHEN $13 THEN $14 ELSE warmup_start_per_day END,
                  warmup_increase_per_day = CASE WHEN $13 THEN $15 ELSE warmup_increase_per_day END,
                  warmup_started_at = CASE WHEN $13 THEN $16 ELSE warmup_started_at END,
                  updated_at = now()
                WHERE id = $1 RETURNING *""",
            before["id"],
            fields.get("health"),
            fields.get("hourlyLimit"),
            "dailyLimit" in fields,
            fields.get("dailyLimit"),
            smtp.get("host"),
            smtp.get("port"),
            smtp.get("tls"),
            "username" in smtp,
            smtp.get("username"),
            "password" in smtp,
            c.secrets.seal(smtp.get("password")),
            "warmup" in fields,
            *_warmup_columns(fields.get("warmup")),
        )
        if changes.imap_set:
            row = await set_imap(c, conn, identity, row["id"], changes.imap, correlation_id, facts)
        envelope = fact_envelope(identity, correlation_id)
        if row["health"] != before["health"]:
            health = MailboxHealthPayload(mailbox_id=row["id"], health=row["health"], previous=before["health"])
            facts.append(MailboxHealthChanged(**envelope, payload=health))
        facts.append(MailboxUpdated(**envelope, payload=account_fact(row)))
    return row


async def remove_account(c: Context, identity: asyncpg.Record, account: asyncpg.Record, correlation_id: str) -> None:
    """The account leaves the pool (its messages stay readable), announced with MailboxRemoved."""
    async with change(c) as (conn, facts):
        await conn.execute("UPDATE mailboxes SET deleted_at = now() WHERE id = $1", account["id"])
        facts.append(
            MailboxRemoved(**fact_envelope(identity, correlation_id), payload=EntityRemovedPayload(id=account["id"]))
        )
        if account["imap_host"] is not None:
            facts.append(sync_fact(identity, correlation_id, account["id"], False))
