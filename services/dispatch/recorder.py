"""Group commit for dispatch outcomes: the records of SMTP replies that arrive together share one statement.

Each outcome must be recorded before its offset is committed, and as soon as possible after the
relay's 250 (that gap is the duplicate window). One autocommit insert per message cost a fifth of
dispatch's CPU; collecting what arrives within `max_delay` seconds keeps the window to a couple of
milliseconds while writing many rows per round trip. The first record of an event wins.
"""

from __future__ import annotations

from uuid import UUID

import asyncpg

from schemas.envelope import Envelope
from services.common import db
from services.common.batching import GroupCommit


class OutcomeRecorder:
    def __init__(self, pool: asyncpg.Pool, consumer: str, max_delay: float = 0.002, max_items: int = 200):
        self.pool, self.consumer = pool, consumer
        self.batch = GroupCommit(self._write, max_delay, max_items)

    async def record(self, event_id: UUID, outputs: list[Envelope]) -> list[Envelope]:
        """Record `outputs` for `event_id` (or find what was recorded first) and return the recorded outputs."""
        return await self.batch.submit((event_id, outputs))

    async def _write(self, batch: list[tuple[UUID, list[Envelope]]]) -> list[list[Envelope]]:
        won = {
            r["event_id"]
            for r in await self.pool.fetch(
                """INSERT INTO processed_events (consumer, event_id, outputs)
                   SELECT $1, e, o::jsonb FROM unnest($2::uuid[], $3::text[]) AS t(e, o)
                   ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id""",
                self.consumer,
                [e for e, _ in batch],
                # one JSON text per row: a list of lists would be read as a two-dimensional array
                [db.json_array(outs) for _, outs in batch],
            )
        }
        earlier = await db.recorded_many(self.pool, self.consumer, [e for e, _ in batch if e not in won])
        return [outputs if event_id in won else earlier.get(event_id, outputs) for event_id, outputs in batch]
