"""Deleting a tenant: every row of an organization, its archive, and the blobs no one else refers to.

`sendstream tenant delete ORG --yes` goes in three steps, each safe to run again:
1. `retire`: its API keys revoked, its identities and mailboxes deleted, its webhook endpoints
   disabled, its timers and re-drives dropped, and every ingress told to forget its cached keys. Nothing
   new starts: the ingress refuses its keys, decide rejects sends of a deleted identity, dispatch fails
   those of a deleted mailbox, intake and mail sync pass over them.
2. `drain`: wait until the work already under way has settled: its archive head unchanged for a quiet
   spell, its latest archived events applied to the views, and the archive holding every event the
   views had applied when it was retired.
3. `erase`, in one transaction: the blobs only it refers to (no other organization put the same bytes),
   then every table's rows of it, the consumers' records of its events, its archive rows and chain head.

Kafka's topics keep its events until their retention expires (the log is not edited): a consumer group
reset onto them would project some of them again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

import asyncpg

from projections import replay
from projections.messages import CONSUMER as PROJECTIONS
from projections.messages import PROJECTED
from services.common.domain.blobs import BlobStore
from services.ingress.auth import principal_cache_key
from services.ingress.cache import CHANNEL
from services.ingress.core.directory import identity_cache_key


class NotFound(LookupError):
    """No organization with this id, and nothing of one in the archive."""


class Refused(Exception):
    """The organization may not be deleted (the operator's own)."""


class NotQuiet(Exception):
    """The organization's work under way did not settle in time."""


IDENTITIES = "identity_id IN (SELECT id FROM identities WHERE org_id = $1)"
MAILBOXES = "mailbox_id IN (SELECT id FROM mailboxes WHERE org_id = $1)"
EVENTS = "event_id IN (SELECT event_id FROM event_archive WHERE org_id = $1)"

# Every table holding an organization's data, and which of its rows are the organization's (with $1 its
# id), in an order the foreign keys allow. tests/integration/test_tenants.py checks that every table
# with an org_id, identity_id or mailbox_id column is here.
ERASED = (
    ("webhook_attempts", "delivery_id IN (SELECT id FROM webhook_deliveries WHERE org_id = $1)"),
    ("webhook_deliveries", "org_id = $1"),
    ("webhook_endpoints", "org_id = $1"),
    ("ui_sessions", "org_id = $1"),
    ("api_keys", "org_id = $1"),
    ("domains", "org_id = $1"),
    ("idempotency_keys", "org_id = $1"),
    ("request_counts", "org_id = $1"),
    ("suppressions", "org_id = $1"),
    ("sender_rules", "org_id = $1"),
    ("refused_mail", "org_id = $1"),
    ("unmatched_reports", "org_id = $1"),
    ("sent_recipients", "org_id = $1"),
    ("threads", "org_id = $1"),
    ("conversations", "org_id = $1"),
    ("messages", "org_id = $1"),
    ("affinity", IDENTITIES),
    ("identity_usage", IDENTITIES),
    ("mailbox_minutes", MAILBOXES),
    ("mailbox_days", MAILBOXES),
    ("mailsync_checkpoints", MAILBOXES),
    ("blob_refs", "org_id = $1"),
    ("timers", "event->>'org_id' = $1::uuid::text"),
    ("redrives", "event->>'org_id' = $1::uuid::text"),
    ("processed_events", EVENTS),  # a consumer's record of an event keeps what it made of it
    ("event_archive", "org_id = $1"),
    ("archive_heads", "org_id = $1"),
    ("scheduled_sends", "org_id = $1"),
    ("drafts", "org_id = $1"),
    ("mailboxes", "org_id = $1"),
    ("identities", "org_id = $1"),
    ("organizations", "id = $1"),
)

# The blobs an organization refers to, and those of them another one refers to as well (the same bytes
# are one blob): `blob_refs`, written by every put before its bytes (services/common/domain/blobs.py).
ITS_BLOBS = "SELECT sha256 FROM blob_refs WHERE org_id = $1"
SHARED = "SELECT DISTINCT sha256 FROM blob_refs WHERE sha256 = ANY($2::bytea[]) AND org_id <> $1"

# Its latest archived events that the views have not applied yet (the last RECENT of them, archived
# in the last quarter hour: older ones were applied long ago, or never will be).
RECENT = 10_000
UNPROJECTED = f"""
SELECT count(*) FROM event_archive a
 WHERE a.org_id = $1 AND a.type = ANY($2::text[]) AND a.archived_at > now() - interval '{replay.ARCHIVE_LAG}'
   AND a.seq > (SELECT seq FROM archive_heads WHERE org_id = $1) - {RECENT}
   AND NOT EXISTS (SELECT 1 FROM processed_events p WHERE p.consumer = $3 AND p.event_id = a.event_id)
"""


@dataclass
class Erased:
    rows: dict[str, int] = field(default_factory=dict)
    blobs_deleted: int = 0
    blobs_shared: int = 0  # another organization refers to them too
    blobs_left: int = 0  # put again since the organization was retired (or already gone)


async def describe(conn: asyncpg.Connection, org_id: UUID) -> asyncpg.Record:
    """The organization (name, operator or not, what it holds); NotFound if nothing of it is left."""
    row = await conn.fetchrow(
        """SELECT o.name, coalesce(o.is_operator, false) AS is_operator,
                  (SELECT count(*) FROM identities WHERE org_id = $1) AS identities,
                  (SELECT count(*) FROM messages WHERE org_id = $1) AS messages,
                  (SELECT seq - dropped_seq FROM archive_heads WHERE org_id = $1) AS events
             FROM (SELECT $1::uuid AS id) q LEFT JOIN organizations o ON o.id = q.id""",
        org_id,
    )
    if row["name"] is None and row["events"] is None:
        raise NotFound(f"no organization {org_id}")
    if row["is_operator"]:
        raise Refused(f"organization {org_id} is the operator's: its keys administer every other")
    return row


async def retire(conn: asyncpg.Connection, org_id: UUID) -> datetime:
    """Stop everything of the organization from starting; returns when (the database's clock)."""
    async with conn.transaction():
        at = await conn.fetchval("SELECT now()")
        keys = await conn.fetch(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE org_id = $1 RETURNING key_hash",
            org_id,
        )
        handles = await conn.fetch(
            """UPDATE identities SET deleted_at = coalesce(deleted_at, now()) WHERE org_id = $1
               RETURNING handle""",
            org_id,
        )
        await conn.execute(
            "UPDATE mailboxes SET deleted_at = coalesce(deleted_at, now()) WHERE org_id = $1", org_id
        )
        await conn.execute(
            """UPDATE webhook_endpoints SET enabled = false, disabled_reason = 'organization deleted'
                WHERE org_id = $1""",
            org_id,
        )
        for table in ("timers", "redrives"):
            await conn.execute(f"DELETE FROM {table} WHERE event->>'org_id' = $1::uuid::text", org_id)
        forget = [principal_cache_key(k["key_hash"]) for k in keys]
        forget += [identity_cache_key(org_id, h["handle"]) for h in handles] + [f"org:{org_id}"]
        await conn.executemany("SELECT pg_notify($1, $2)", [(CHANNEL, key) for key in forget])
    return at


async def drain(
    conn: asyncpg.Connection, org_id: UUID, retired_at: datetime, quiet_s: float, wait_s: float
) -> None:
    """Return once the organization's work under way has settled, and the archive holds every event
    the views applied before it was retired (its own among them: archived after the erase, they would
    outlive it); NotQuiet after `wait_s`."""
    deadline = time.monotonic() + wait_s
    head, since = None, time.monotonic()
    while True:
        now = await conn.fetchval("SELECT seq FROM archive_heads WHERE org_id = $1", org_id)
        if now != head:
            head, since = now, time.monotonic()
        settled = (
            time.monotonic() - since >= quiet_s
            and not await conn.fetchval(UNPROJECTED, org_id, list(PROJECTED), PROJECTIONS)
            and not await replay.unarchived(conn, until=retired_at)
        )
        if settled:
            return
        if time.monotonic() > deadline:
            raise NotQuiet(f"organization {org_id} still has work under way after {wait_s:.0f}s")
        await asyncio.sleep(0.5)


async def erase(conn: asyncpg.Connection, org_id: UUID, blobs: BlobStore, retired_at: datetime) -> Erased:
    """Delete everything of the organization, in one transaction, and the blobs only it refers to."""
    erased = Erased()
    async with conn.transaction():
        mine = [r["sha256"] for r in await conn.fetch(ITS_BLOBS, org_id)]
        shared = {r["sha256"] for r in await conn.fetch(SHARED, org_id, mine)} if mine else set()
        alone = [s.hex() for s in mine if s not in shared]
        # First the blobs: if this fails, nothing below is done, and running it again finds them again.
        deleted = await blobs.delete(alone, put_before=retired_at) if alone else []
        erased.blobs_deleted, erased.blobs_shared = len(deleted), len(shared)
        erased.blobs_left = len(alone) - len(deleted)
        for table, mine_where in ERASED:
            done = await conn.execute(f"DELETE FROM {table} WHERE {mine_where}", org_id)
            erased.rows[table] = int(done.split()[-1])
    return erased
