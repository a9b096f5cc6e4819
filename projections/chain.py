"""The archive's hash chains (projections/archive.py writes them): how a row's hash is made, and the
walk that checks an organization's chain. Light to import: the `sendstream` command uses it.

hash = sha256(prev_hash || "<org_id>:<seq>:" || event::text), the first row's prev_hash 32 zero bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

import asyncpg

GENESIS = bytes(32)  # the prev_hash of an organization's first event


def link(prev_hash: bytes, org_id: UUID, seq: int, event_text: str) -> bytes:
    return hashlib.sha256(prev_hash + f"{org_id}:{seq}:".encode() + event_text.encode()).digest()


@dataclass(frozen=True)
class Broken:
    """Where an organization's chain stops matching what was written."""

    org_id: UUID
    seq: int
    event_id: UUID | None
    problem: str


async def verify_chain(
    conn: asyncpg.Connection, org_id: UUID, progress: Callable[[int], None] | None = None
) -> Broken | None:
    """Walk one organization's chain in order: the first row that does not match what was written
    (None: the chain is whole). `progress` hears of every row checked."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        head = await conn.fetchrow(
            "SELECT seq, hash, dropped_seq, dropped_hash FROM archive_heads WHERE org_id = $1", org_id
        )
        # After retention dropped old months, the chain goes on from the last event dropped.
        seq, prev = (head["dropped_seq"], head["dropped_hash"]) if head else (0, GENESIS)
        async for r in conn.cursor(
            """SELECT seq, event_id, event::text AS text, prev_hash, hash FROM event_archive
                WHERE org_id = $1 AND seq > $2 ORDER BY seq""",
            org_id,
            seq,
            prefetch=2000,
        ):
            seq += 1
            if progress:
                progress(1)
            if r["seq"] != seq:
                return Broken(org_id, seq, r["event_id"], f"event {seq} is missing (the next is {r['seq']})")
            if r["prev_hash"] != prev:
                return Broken(org_id, seq, r["event_id"], "it does not follow the event before it")
            if link(prev, org_id, seq, r["text"]) != r["hash"]:
                return Broken(org_id, seq, r["event_id"], "its contents changed after it was archived")
            prev = r["hash"]
    if head is not None and (head["seq"], head["hash"]) != (seq, prev):
        return Broken(org_id, seq + 1, None, f"the chain ends at {seq}, but {head['seq']} were archived")
    return None
