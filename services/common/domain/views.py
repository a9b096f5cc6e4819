"""Reads of the message views (the projections' tables) that every dialect renders from: an inbox's
messages (newest first, or ranked by a full-text query), one message, its threads. The only place
that knows the views' layout for these reads. A deleted message is in none of them (its audit trail
stays)."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from services.common.broker import is_transient
from services.common.domain.blobs import BlobStore

_MESSAGES = (
    """SELECT m.*, i.handle AS inbox_address FROM messages m JOIN identities i ON i.id = m.identity_id"""
)
_LIVE = "m.deleted_at IS NULL"


def search_query(text: str) -> str | None:
    """A tsquery for what a user typed: every word must match, the last one as a prefix (so a query
    typed as far as "quart" finds "quarterly"). None when it holds no word at all."""
    words = re.findall(r"\w+", text.lower())
    if not words:
        return None
    return " & ".join([*words[:-1], f"{words[-1]}:*"])


async def inbox_messages(
    pool: asyncpg.Pool, org_id: UUID, identity_id: UUID | None, query: str | None = None, limit: int = 100
) -> list[asyncpg.Record]:
    """The identity's (None: the organization's) messages, newest first; with `query`, those matching it,
    best first (subject over sender over text), then newest. A query without a word matches nothing."""
    if query is None or not query.strip():
        return await pool.fetch(
            f"""{_MESSAGES} WHERE m.org_id = $1 AND ($2::uuid IS NULL OR m.identity_id = $2) AND {_LIVE}
                ORDER BY m.created_at DESC, m.id DESC LIMIT $3""",
            org_id, identity_id, limit,
        )  # fmt: skip
    tsquery = search_query(query)
    if tsquery is None:
        return []
    return await pool.fetch(
        f"""{_MESSAGES}, to_tsquery('simple', $3) AS q
             WHERE m.org_id = $1 AND ($2::uuid IS NULL OR m.identity_id = $2) AND m.search @@ q AND {_LIVE}
             ORDER BY ts_rank(m.search, q) DESC, m.created_at DESC, m.id DESC LIMIT $4""",
        org_id, identity_id, tsquery, limit,
    )  # fmt: skip


async def inbox_message(
    pool: asyncpg.Pool, org_id: UUID, identity_id: UUID, message_id: UUID | None
) -> asyncpg.Record | None:
    if message_id is None:
        return None
    return await pool.fetchrow(
        f"{_MESSAGES} WHERE m.id = $1 AND m.org_id = $2 AND m.identity_id = $3 AND {_LIVE}",
        message_id,
        org_id,
        identity_id,
    )


async def message(pool: asyncpg.Pool, org_id: UUID, message_id: UUID | None) -> asyncpg.Record | None:
    """The organization's message of this id, whichever identity's."""
    if message_id is None:
        return None
    return await pool.fetchrow(f"{_MESSAGES} WHERE m.id = $1 AND m.org_id = $2 AND {_LIVE}", message_id, org_id)


async def mailbox_page(
    pool: asyncpg.Pool,
    org_id: UUID,
    identity_id: UUID,
    *,
    direction: str | None = None,
    after: tuple[datetime, UUID] | None = None,
    limit: int = 50,
) -> tuple[list[asyncpg.Record], bool]:
    """One page of the identity's messages, newest first: those after the keyset `after` (created_at,
    id) of the last one a previous page showed, so messages added meanwhile shift nothing. Messages a
    send was refused for (`rejected`: nothing went out) are not listed. Also whether more follow."""
    return await filtered_page(pool, org_id, identity_id, Filter(direction=direction), after=after, limit=limit)


@dataclass(frozen=True)
class Filter:
    """Which messages a filtered list keeps: each condition given must hold (every value of a tuple)."""

    direction: str | None = None  # inbound or outbound
    unread: bool | None = None
    labels: tuple[str, ...] = ()  # the message's own labels: all of these
    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created before
    senders: tuple[str, ...] = ()  # each a part of its From address (any case)
    recipients: tuple[str, ...] = ()  # each a part of one of its To, Cc or Bcc addresses
    subjects: tuple[str, ...] = ()  # each a part of its subject


def _where(f: Filter, args: list[object], alias: str = "m") -> str:
    """`f` as SQL conditions on messages `alias`, its values appended to `args` ($n numbered after them)."""

    def arg(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    parts = []
    if f.direction is not None:
        parts.append(f"{alias}.direction = {arg(f.direction)}")
    if f.unread is not None:
        parts.append(f"{alias}.is_read = {arg(not f.unread)}")
    if f.labels:
        parts.append(f"{alias}.labels @> {arg(list(f.labels))}::text[]")
    if f.since is not None:
        parts.append(f"{alias}.created_at >= {arg(f.since)}")
    if f.until is not None:
        parts.append(f"{alias}.created_at < {arg(f.until)}")
    parts += [f"strpos(lower({alias}.from_addr), lower({arg(s)})) > 0" for s in f.senders]
    parts += [
        f"""EXISTS (SELECT 1 FROM unnest({alias}.to_addrs || {alias}.cc_addrs || {alias}.bcc_addrs) a
                    WHERE strpos(lower(a), lower({arg(r)})) > 0)"""
        for r in f.recipients
    ]
    parts += [f"strpos(lower({alias}.subject), lower({arg(s)})) > 0" for s in f.subjects]
    return " AND ".join(parts) or "true"


async def filtered_page(
    pool: asyncpg.Pool,
    org_id: UUID,
    identity_id: UUID | None,
    f: Filter,
    *,
    after: tuple[datetime, UUID] | None = None,
    ascending: bool = False,
    limit: int = 50,
) -> tuple[list[asyncpg.Record], bool]:
    """One page of the identity's messages (None: every one of the organization's) that `f` keeps, newest
    first or (`ascending`) oldest first: those beyond the keyset `after` (created_at, id) of the last one a
    previous page showed, so messages added meanwhile shift nothing. Messages a send was refused for
    (`rejected`: nothing went out) are not listed. Also whether more follow."""
    args: list[object] = [org_id, identity_id, after and after[0], after and after[1], limit + 1]
    order, beyond = ("ASC", ">") if ascending else ("DESC", "<")
    rows = await pool.fetch(
        f"""{_MESSAGES} WHERE m.org_id = $1 AND ($2::uuid IS NULL OR m.identity_id = $2) AND {_LIVE}
              AND m.status <> 'rejected' AND ($3::timestamptz IS NULL OR (m.created_at, m.id) {beyond} ($3, $4::uuid))
              AND {_where(f, args)}
            ORDER BY m.created_at {order}, m.id {order} LIMIT $5""",
        *args,
    )
    return rows[:limit], len(rows) > limit


async def thread_page(
    pool: asyncpg.Pool,
    org_id: UUID,
    identity_id: UUID | None,
    f: Filter,
    *,
    after: tuple[datetime, UUID] | None = None,
    ascending: bool = False,
    limit: int = 50,
) -> tuple[list[tuple[asyncpg.Record, list[asyncpg.Record]]], bool]:
    """Conversations of the identity (None: every one of the organization's) most recently active first
    (or, `ascending`, least), those with a message `f` keeps, each with its messages in order (and its
    identity's `handle`); whether more follow."""
    args: list[object] = [org_id, identity_id, after and after[0], after and after[1], limit + 1]
    order, beyond = ("ASC", ">") if ascending else ("DESC", "<")
    convs = await pool.fetch(
        f"""SELECT c.*, i.handle, mb.email AS mailbox_email FROM conversations c
              JOIN identities i ON i.id = c.identity_id LEFT JOIN mailboxes mb ON mb.id = c.mailbox_id
             WHERE c.org_id = $1 AND ($2::uuid IS NULL OR c.identity_id = $2)
               AND ($3::timestamptz IS NULL OR (c.updated_at, c.id) {beyond} ($3, $4::uuid))
               AND EXISTS (SELECT 1 FROM messages m WHERE m.conv_id = c.id AND {_LIVE} AND m.status <> 'rejected'
                             AND {_where(f, args)})
             ORDER BY c.updated_at {order}, c.id {order} LIMIT $5""",
        *args,
    )
    more, convs = len(convs) > limit, convs[:limit]
    rows = await pool.fetch(
        f"{_MESSAGES} WHERE m.conv_id = ANY($1::uuid[]) AND {_LIVE} ORDER BY m.created_at, m.id",
        [c["id"] for c in convs],
    )
    by_conv: dict[UUID, list[asyncpg.Record]] = {c["id"]: [] for c in convs}
    for r in rows:
        by_conv[r["conv_id"]].append(r)
    return [(c, by_conv[c["id"]]) for c in convs], more


async def answered_message(
    pool: asyncpg.Pool, org_id: UUID, identity_id: UUID, rfc_message_id: str
) -> asyncpg.Record | None:
    """The identity's message of this RFC 5322 Message-ID (a reply's `In-Reply-To`), newest if several."""
    return await pool.fetchrow(
        f"""{_MESSAGES} WHERE m.org_id = $1 AND m.identity_id = $2 AND m.rfc_message_id = $3
            ORDER BY m.created_at DESC LIMIT 1""",
        org_id, identity_id, rfc_message_id,
    )  # fmt: skip


# How long a caller waits for the views (written by the projections) to catch up with the log:
SHOWN_WAIT_S = 5.0  # a request that changed something, to answer with the change shown (`shown`)
FILL_WAIT_S = 2.0  # the webhooks fan-out, for a message's row to fill in its payload (it holds a batch)


async def shown(pool: asyncpg.Pool, probe: str, *args: object, wait_s: float = SHOWN_WAIT_S) -> bool:
    """Wait (at most `wait_s`) until the views show a change the caller made: `probe`, a query of one
    value, answers true. Whether they did in time (the change is on the log either way, so a database
    that cannot be asked makes it "not yet", never an error that would invite the change again)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if await pool.fetchval(probe, *args):
                return True
        except Exception as exc:
            if not is_transient(exc):
                raise
            return False
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)


async def conversation(
    pool: asyncpg.Pool, org_id: UUID, conv_id: UUID, wait_s: float = 2.0
) -> tuple[asyncpg.Record, list[asyncpg.Record]] | None:
    """A conversation (with its identity's handle and its mailbox's address) and its messages in order.
    One a send has just created (decide's `threads` knows it) may not be projected yet: wait for it
    briefly, so a convId a client was given is always readable."""
    deadline = time.monotonic() + wait_s
    while True:
        conv = await pool.fetchrow(
            """SELECT c.*, i.handle, m.email AS mailbox_email
                 FROM conversations c JOIN identities i ON i.id = c.identity_id
                 LEFT JOIN mailboxes m ON m.id = c.mailbox_id
                WHERE c.id = $1 AND c.org_id = $2""",
            conv_id,
            org_id,
        )
        if conv is not None:
            break
        if time.monotonic() > deadline or not await pool.fetchval(
            "SELECT true FROM threads WHERE conv_id = $1 AND org_id = $2", conv_id, org_id
        ):
            return None
        await asyncio.sleep(0.02)
    rows = await pool.fetch(
        f"{_MESSAGES} WHERE m.conv_id = $1 AND {_LIVE} ORDER BY m.created_at, m.id", conv_id
    )
    return conv, rows


async def messages_by_id(
    conn: asyncpg.Connection | asyncpg.Pool, message_ids: list[UUID]
) -> dict[UUID, dict]:
    """Messages by id, whichever identity and organization they belong to (for the webhooks of events)."""
    rows = await conn.fetch(f"{_MESSAGES} WHERE m.id = ANY($1::uuid[])", message_ids)
    return {r["id"]: dict(r) for r in rows}


async def messages_filled(
    conn: asyncpg.Connection | asyncpg.Pool, message_ids: list[UUID], wait_s: float = FILL_WAIT_S
) -> dict[UUID, dict]:
    """As `messages_by_id`, waiting (at most `wait_s`) for those the view does not have yet: it is written
    by another consumer, which may not have come to an event's message (then it is left out)."""
    stored = await messages_by_id(conn, message_ids) if message_ids else {}
    deadline = time.monotonic() + wait_s
    while (missing := [m for m in message_ids if m not in stored]) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        stored |= await messages_by_id(conn, missing)
    return stored


async def inbox_threads(
    pool: asyncpg.Pool, org_id: UUID, identity_id: UUID, conv_id: UUID | None = None, limit: int = 50
) -> list[tuple[asyncpg.Record, list[asyncpg.Record]]]:
    """The identity's conversations, most recently active first (or the one `conv_id`), each with its
    messages in order."""
    convs = await pool.fetch(
        """SELECT * FROM conversations WHERE org_id = $1 AND identity_id = $2 AND ($3::uuid IS NULL OR id = $3)
            ORDER BY updated_at DESC, id DESC LIMIT $4""",
        org_id, identity_id, conv_id, limit,
    )  # fmt: skip
    rows = await pool.fetch(
        f"{_MESSAGES} WHERE m.conv_id = ANY($1::uuid[]) AND {_LIVE} ORDER BY m.created_at, m.id",
        [c["id"] for c in convs],
    )
    by_conv: dict[UUID, list[asyncpg.Record]] = {c["id"]: [] for c in convs}
    for r in rows:
        by_conv[r["conv_id"]].append(r)
    return [(c, by_conv[c["id"]]) for c in convs]


async def files_of(blobs: BlobStore, row: asyncpg.Record) -> dict[str, bytes]:
    """The bytes of a message's attachments, by sha256."""
    return {a["sha256"]: await blobs.get(a["sha256"]) for a in row["attachments"]}
