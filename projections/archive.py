"""The archive: every event of every topic, once, in an append-only PostgreSQL table that outlives the
broker's log (migration 024_archive.sql). It is the record the audit trail, the tenant feed and
replay read.

The `archive` consumer group reads every topic and writes each batch in one transaction, its offsets
committed after it; an event already archived (a redelivery, a re-drive) is passed over, so each is
kept once. Each organization's events form a chain: numbered without gaps (`seq`, the feed's cursor)
in the order they were archived (log order within a partition), each row carrying the hash of the one
before it. The organization's head (`archive_heads`) is locked while a batch appends to it, so two
archivers never interleave one chain. `chain.verify_chain` walks them and names the first row that does not
match what was written: an edited, removed or reordered row breaks its chain from there on.

A row's hash covers its organization, its number and the event as PostgreSQL keeps it (`jsonb`
rendered as text: one form, whatever the writer's JSON looked like), so anyone with the rows can check
them with sha256 alone: hash = sha256(prev_hash || "<org_id>:<seq>:" || event::text).
"""

from __future__ import annotations

import contextlib
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import structlog
from faststream.kafka import KafkaBroker
from pydantic_core import PydanticSerializationError

from projections.chain import link
from schemas.events import messages_of
from schemas.topics import ALL_TOPICS
from services.common.broker import Logged, subscribe
from services.common.notify import ARCHIVED
from services.common.settings import CommonSettings

CONSUMER = "archive"
log = structlog.get_logger("sendstream.archive")


def month_of(at: datetime) -> datetime:
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, 1, tzinfo=UTC)


APPEND = """
WITH appended AS (
    INSERT INTO event_archive (org_id, seq, event_id, type, occurred_at, topic, partition, "offset",
                               message_ids, event, prev_hash, hash)
    SELECT o, s, e, t, a, tp, p, f, m::uuid[], d::jsonb, ph, h
      FROM unnest($1::uuid[], $2::bigint[], $3::uuid[], $4::text[], $5::timestamptz[], $6::text[],
                  $7::int[], $8::bigint[], $9::text[], $10::text[], $11::bytea[], $12::bytea[])
        AS r(o, s, e, t, a, tp, p, f, m, d, ph, h)
), moved AS (
    UPDATE archive_heads h SET seq = u.seq, hash = u.hash
      FROM unnest($13::uuid[], $14::bigint[], $15::bytea[]) AS u(org_id, seq, hash)
     WHERE h.org_id = u.org_id
)
SELECT pg_notify($16, $17)
"""


def uuid_array(ids: list[UUID]) -> str:
    """A uuid[] as PostgreSQL's array text (a row's array through unnest, which would flatten a list)."""
    return "{" + ",".join(map(str, ids)) + "}"


def columns(rows: list[tuple], width: int) -> list[list]:
    """Rows to per-column lists for unnest()."""
    return [list(c) for c in zip(*rows, strict=True)] or [[] for _ in range(width)]


class Archive:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool
        self.months: set[datetime] = set()  # month partitions known to exist

    async def _partitions_for(self, months: set[datetime]) -> None:
        """Create the month partitions `months` need (once per process; a race with another is harmless)."""
        for month in sorted(months - self.months):
            end = datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=UTC)
            # Created by another archiver meanwhile: IF NOT EXISTS can still lose that race.
            with contextlib.suppress(asyncpg.DuplicateTableError, asyncpg.UniqueViolationError):
                await self.pool.execute(
                    f"""CREATE TABLE IF NOT EXISTS event_archive_{month:%Y_%m} PARTITION OF event_archive
                        FOR VALUES FROM ('{month.isoformat()}') TO ('{end.isoformat()}')"""
                )
            self.months.add(month)

    async def write(self, logged: list[Logged]) -> int:
        """Append the events not archived yet to their organizations' chains; returns how many were new.

        An event PostgreSQL cannot keep as it is (a NUL or a lone surrogate in a string: put on the log by
        something other than our own code, which makes every string storable) is kept with each such
        character as U+FFFD, the form its hash then covers: every event on the log is in the archive."""
        first: dict[UUID, Logged] = {}
        for entry in logged:  # an event twice in the batch is kept where it was first read
            first.setdefault(entry.event.event_id, entry)
        batch = list(first.values())
        await self._partitions_for({month_of(e.event.occurred_at) for e in batch})
        try:  # each event's JSON text, made by pydantic at once (PostgreSQL renders it as jsonb)
            return await self._append(batch, [e.event.model_dump_json() for e in batch])
        except (
            PydanticSerializationError,  # a lone surrogate: not UTF-8
            asyncpg.UntranslatableCharacterError,  # a NUL: not storable in jsonb
            asyncpg.CharacterNotInRepertoireError,
        ):
            return await self._append(
                batch, [json.dumps(storable(e.event.model_dump(mode="json"))) for e in batch]
            )

    async def _append(self, batch: list[Logged], documents: list[str]) -> int:
        orgs = sorted({e.event.org_id for e in batch})
        async with self.pool.acquire() as conn, conn.transaction():
            # The chains' ends, locked to the commit (in org order: two archivers never deadlock), so
            # they cannot move under this batch; an organization's first event makes its head.
            heads = {
                r["org_id"]: (r["seq"], r["hash"])
                for r in await conn.fetch(
                    """INSERT INTO archive_heads (org_id) SELECT unnest($1::uuid[])
                       ON CONFLICT (org_id) DO UPDATE SET seq = archive_heads.seq
                       RETURNING org_id, seq, hash""",
                    orgs,
                )
            }
            # What is archived already, and each event as PostgreSQL renders it (what the hash covers).
            known = await conn.fetchrow(
                """SELECT (SELECT array_agg(d::jsonb::text ORDER BY i) FROM unnest($1::text[]) WITH ORDINALITY AS u(d, i))
                              AS texts,
                          (SELECT coalesce(array_agg(event_id), '{}') FROM event_archive
                            WHERE event_id = ANY($2::uuid[])) AS seen""",
                documents,
                [e.event.event_id for e in batch],
            )
            seen = set(known["seen"])
            rows = []
            for entry, text in zip(batch, known["texts"], strict=True):
                event = entry.event
                if event.event_id in seen:
                    continue
                seq, prev = heads[event.org_id]
                seq += 1
                digest = link(prev, event.org_id, seq, text)
                heads[event.org_id] = (seq, digest)
                rows.append((
                    event.org_id, seq, event.event_id, event.type, event.occurred_at, entry.topic,
                    entry.partition, entry.offset, uuid_array(messages_of(event)), text, prev, digest,
                ))  # fmt: skip
            if not rows:
                return 0
            grown = sorted({str(r[0]) for r in rows})  # told at the commit: the feed's waiters
            # The rows, the chains' new ends and the notification: one statement.
            await conn.execute(
                APPEND,
                *columns(rows, 12),
                list(heads),
                [s for s, _ in heads.values()],
                [h for _, h in heads.values()],
                ARCHIVED,
                json.dumps(grown) if len(grown) <= 100 else "*",
            )
        return len(rows)


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(value: Any) -> Any:
    """A JSON document with every NUL and lone surrogate of its strings (keys too) as U+FFFD."""
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    return value


def build(broker: KafkaBroker, settings: CommonSettings, pool: asyncpg.Pool) -> Archive:
    """Register the archive consumer on `broker`."""
    archive = Archive(pool)

    @subscribe(broker, settings, ALL_TOPICS, group=CONSUMER, positions=True)  # the feed waits on it
    async def on_events(logged: list[Logged]) -> None:
        """Keep every event, once, in the archive."""
        added = await archive.write(logged)
        log.debug("events archived", added=added, seen=len(logged) - added)

    return archive


async def drop_expired(pool: asyncpg.Pool, older_than: timedelta) -> list[str]:
    """Drop the archive's month partitions that ended more than `older_than` ago; returns their names.
    Each organization's chain is anchored at the last event dropped (archive_heads.dropped_seq and
    dropped_hash), so `verify_chain` checks what remains from there."""
    async with pool.acquire() as conn:
        expired = await conn.fetch(
            """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = 'event_archive'::regclass
                  AND (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]::timestamptz
                      <= now() - $1::interval
                ORDER BY c.relname""",
            older_than,
        )
        dropped = []
        for row in expired:
            name = row["relname"]
            async with conn.transaction():
                await conn.execute(
                    "LOCK TABLE archive_heads IN EXCLUSIVE MODE"
                )  # no archiver appends meanwhile
                await conn.execute(
                    f"""UPDATE archive_heads h SET dropped_seq = last.seq, dropped_hash = last.hash
                          FROM (SELECT DISTINCT ON (org_id) org_id, seq, hash FROM "{name}"
                                 ORDER BY org_id, seq DESC) AS last
                         WHERE h.org_id = last.org_id AND last.seq > h.dropped_seq"""
                )
                await conn.execute(f'DROP TABLE "{name}"')
            dropped.append(name)
    return dropped
