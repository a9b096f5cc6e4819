"""Replay: the views rebuilt from the archive, compared with the live ones row for row, and swapped in.

The archive (projections/archive.py) holds every event the log carried, once; the views are what the
projections made of those events (projections/messages.py), and their statements commute, so reading
the archive in any order into empty tables rebuilds them. `sendstream replay` does it in four steps:

1. **Rebuild** into a schema of its own (`LIKE` the live tables: same columns, defaults, generated
   columns and indexes), from one snapshot of the archive, recording where each organization's chain
   stood (its `seq`).
2. **Catch up** with what was archived meanwhile: the rows after those marks.
3. **Settle**: lock the live views against the projections consumer (`EXCLUSIVE`: readers go on), wait
   until the archive holds every event the live views applied (processed_events), catch up once more.
4. **Compare and swap**: the rows that differ, table by table, are named; the live tables are then made
   equal to the rebuilt ones (changed and missing rows written, rows the log does not explain removed)
   in the same transaction, so readers see the old views or the new, never a mix, and the projections
   consumer goes on from there. Events the archive holds that the consumer had not applied yet are in
   the new views already; applying them again changes nothing.

`as_of` rebuilds only the events that occurred up to then, into a schema that is kept: the views as
they were. `orgs` limits the rebuild to some organizations (`org_id`, compare and swap to one).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import heapq
import multiprocessing
import os
import queue
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from projections.messages import CONSUMER, PROJECTED, Groups, plan
from schemas.events import parse_event
from services.common import db
from services.common.domain import bodies
from services.common.domain.blobs import BlobStore, blob_store
from services.common.settings import CommonSettings

# The views and their keys.
VIEWS: dict[str, tuple[str, ...]] = {
    "messages": ("id",),
    "conversations": ("id",),
    "suppressions": ("org_id", "address"),
}
PARALLEL_FROM = 20_000  # events to apply before worker processes are worth starting (a second each)
MOST_WORKERS = 8  # by default: each holds database connections, and PostgreSQL's writes are shared too


def default_workers() -> int:
    """One worker process per core this process may run on, up to MOST_WORKERS."""
    return max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
                      MOST_WORKERS))  # fmt: skip


REPLAY_LOCK = 0x5E4D_0001  # advisory lock: one replay into the live views at a time
# How far back the settle step looks for events the live views applied: the archive is never further
# behind the projections than this (it reads the same log; seconds in practice).
ARCHIVE_LAG = "15 minutes"

Progress = Callable[[int], None]


@dataclass
class Difference:
    """How one live view differs from its rebuilt copy."""

    table: str
    changed: list[tuple] = field(default_factory=list)  # keys in both, some column differs
    missing: list[tuple] = field(default_factory=list)  # keys the rebuild has and the live view lacks
    unexplained: list[tuple] = field(default_factory=list)  # keys only the live view has
    columns: dict[tuple, list[str]] = field(default_factory=dict)  # for some changed keys: which columns

    def __bool__(self) -> bool:
        return bool(self.changed or self.missing or self.unexplained)


@contextmanager
def rare_collections() -> Iterator[None]:
    """Python's cyclic garbage collector run rarely: parsing events makes many objects and no cycles
    (reference counting frees them), and with the default thresholds the collector took two thirds of
    the time spent parsing."""
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


class Rebuild:
    """The views rebuilt from the archive into `schema`, on connections of their own."""

    def __init__(
        self,
        url: str,
        schema: str,
        blobs: BlobStore | None,
        *,
        orgs: list[UUID] | None = None,
        as_of: datetime | None = None,
        batch: int = 2000,
        workers: int = 1,
    ):
        self.url, self.schema, self.blobs = url, schema, blobs
        self.orgs, self.as_of, self.batch, self.workers = orgs, as_of, batch, workers
        self.marks: dict[UUID, int] = {}  # each organization's last archived seq already applied
        self.applied = 0
        self.processes = 1  # the most that rebuilt at once

    async def _connect(self, **settings: str) -> asyncpg.Connection:
        conn = await asyncpg.connect(self.url, server_settings=settings or None)
        await db.init_connection(conn)
        return conn

    async def create(self) -> None:
        """An empty copy of each view in `schema` (dropped first if it is there)."""
        conn = await self._connect()
        try:
            async with conn.transaction():
                await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
                await conn.execute(f'CREATE SCHEMA "{self.schema}"')
                for table, key in VIEWS.items():
                    await conn.execute(
                        f"""CREATE UNLOGGED TABLE "{self.schema}".{table}
                            (LIKE public.{table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
                             PRIMARY KEY ({", ".join(key)}))"""
                    )
        finally:
            await conn.close()

    async def drop(self) -> None:
        conn = await self._connect()
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        finally:
            await conn.close()

    def _scope(self, first: int, orgs: list[UUID] | None = None) -> tuple[str, list[Any]]:
        """The archive rows of projected events in scope (of `orgs` only, if given), from placeholder
        $`first` on."""
        where = [f"a.type = ANY(${first}::text[])"]
        args: list[Any] = [list(PROJECTED)]
        if (orgs := orgs if orgs is not None else self.orgs) is not None:
            args.append(orgs)
            where.append(f"a.org_id = ANY(${first + len(args) - 1}::uuid[])")
        if self.as_of is not None:
            args.append(self.as_of)
            where.append(f"a.occurred_at <= ${first + len(args) - 1}")
        return " AND ".join(where), args

    async def count(self) -> int:
        """How many archived events the rebuild will read (for a progress bar)."""
        conn = await self._connect()
        try:
            where, args = self._scope(1)
            return await conn.fetchval(f"SELECT count(*) FROM event_archive a WHERE {where}", *args)
        finally:
            await conn.close()

    async def run(self, progress: Progress | None = None) -> int:
        """Apply every archived event after the marks (all of them, the first time); returns how many.
        One snapshot: the rows read and the chains' heads recorded as the new marks agree. With more
        than one worker and enough to do, the organizations are shared out among worker processes
        (each applies whole organizations, so no two write the same row), reading the same snapshot."""
        before = self.applied
        reader = await self._connect()
        try:
            async with reader.transaction(isolation="repeatable_read", readonly=True):
                heads = await reader.fetch(
                    "SELECT org_id, seq FROM archive_heads WHERE $1::uuid[] IS NULL OR org_id = ANY($1)",
                    self.orgs,
                )
                # (only the first run can be large: the later ones catch up with what came since)
                parts = await self._parts(reader) if self.workers > 1 and not self.marks else []
                if len(parts) > 1:
                    snapshot = await reader.fetchval("SELECT pg_export_snapshot()")
                    await self._in_processes(snapshot, parts, progress)
                    self.processes = max(self.processes, len(parts))
                else:
                    with rare_collections():
                        await self.apply(reader, None, progress)
            self.marks.update({h["org_id"]: h["seq"] for h in heads})
        finally:
            await reader.close()
        return self.applied - before

    async def _parts(self, reader: asyncpg.Connection) -> list[list[UUID]]:
        """The organizations to rebuild (the first time: no marks yet) shared out among the workers, by
        how many events each has (the largest first, each to the least loaded); none when it is too
        little to share."""
        where, args = self._scope(1)
        counts = await reader.fetch(
            f"SELECT a.org_id, count(*) AS n FROM event_archive a WHERE {where} GROUP BY a.org_id ORDER BY n DESC",
            *args,
        )
        if sum(r["n"] for r in counts) < PARALLEL_FROM:
            return []
        loads = [(0, i, []) for i in range(self.workers)]
        for row in counts:
            load, i, orgs = heapq.heappop(loads)
            orgs.append(row["org_id"])
            heapq.heappush(loads, (load + row["n"], i, orgs))
        return [orgs for _, _, orgs in sorted(loads, key=lambda x: x[1]) if orgs]

    async def _in_processes(self, snapshot: str, parts: list[list[UUID]], progress: Progress | None) -> None:
        """Each part applied by a process of its own, in `snapshot`; their progress reported here."""
        context = multiprocessing.get_context("spawn")
        reports = context.Queue()
        job = (self.url, self.schema, self.blobs is not None, self.as_of, self.batch, snapshot)
        workers = [context.Process(target=_worker, args=(*job, orgs, reports), daemon=True) for orgs in parts]
        for w in workers:
            w.start()
        loop, running = asyncio.get_running_loop(), len(workers)
        try:
            while running:
                try:
                    report = await loop.run_in_executor(None, functools.partial(reports.get, timeout=1))
                except queue.Empty:
                    if dead := [w.exitcode for w in workers if w.exitcode not in (None, 0)]:
                        raise RuntimeError(f"a replay worker exited with status {dead[0]}") from None
                    continue
                if report is None:
                    running -= 1
                elif isinstance(report, int):
                    self.applied += report
                    if progress:
                        progress(report)
                else:
                    raise RuntimeError(f"a replay worker failed: {report}")
        finally:
            for w in workers:
                if w.is_alive():
                    w.terminate()
                w.join()

    async def apply(
        self, reader: asyncpg.Connection, orgs: list[UUID] | None, progress: Progress | None
    ) -> None:
        """Read the rows in scope after the marks (of `orgs`, if given) in `reader`'s transaction, and
        write their statements into `schema`."""
        writer = await self._connect(search_path=f'"{self.schema}"')  # its tables only, never the live ones
        try:
            where, args = self._scope(3, orgs)
            cursor = await reader.cursor(
                f"""SELECT a.event::text AS event FROM event_archive a
                      LEFT JOIN unnest($1::uuid[], $2::bigint[]) AS m(org_id, seq) USING (org_id)
                     WHERE a.seq > coalesce(m.seq, 0) AND {where}""",
                list(self.marks), list(self.marks.values()), *args,
            )  # fmt: skip
            # Three batches in flight: one read, one made into statements, one written.
            pending = asyncio.ensure_future(cursor.fetch(self.batch))
            writing: asyncio.Future | None = None
            while rows := await pending:
                pending = asyncio.ensure_future(cursor.fetch(self.batch))
                rounds = await self._statements([parse_event(r["event"]) for r in rows])
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(self._write(writer, rounds, len(rows), progress))
            if writing is not None:
                await writing
        finally:
            await writer.close()

    async def _statements(self, events: list) -> list[Groups]:
        """The events' statements, folded and grouped as the projections consumer runs them."""
        texts = await bodies.texts_of(self.blobs, events) if self.blobs is not None else {}
        return plan(events, texts)

    async def _write(
        self,
        writer: asyncpg.Connection,
        rounds: list[Groups],
        count: int,
        progress: Progress | None,
    ) -> None:
        async with writer.transaction():
            for groups in rounds:
                for sql, rows in groups.items():
                    await writer.executemany(sql, rows)
        self.applied += count
        if progress:
            progress(count)


def _worker(
    url: str, schema: str, with_blobs: bool, as_of: datetime | None, batch: int, snapshot: str,
    orgs: list[UUID], reports: Any,
) -> None:  # fmt: skip
    """A worker process of Rebuild.run's first run: apply these organizations' events, read in
    `snapshot`; report each batch's count, then None (or what went wrong)."""

    async def work() -> None:
        pool = (
            await asyncpg.create_pool(url, min_size=1, max_size=2, init=db.init_connection)
            if with_blobs
            else None
        )
        blobs = blob_store(CommonSettings(database_url=url), pool) if pool is not None else None
        if blobs is not None:
            await blobs.start()
        rebuild = Rebuild(url, schema, blobs, as_of=as_of, batch=batch)
        reader = await rebuild._connect()
        try:
            async with reader.transaction(isolation="repeatable_read", readonly=True):
                await reader.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
                await rebuild.apply(reader, orgs, reports.put)
        finally:
            await reader.close()
            if blobs is not None and pool is not None:
                await blobs.stop()
                await pool.close()

    try:
        with rare_collections():
            asyncio.run(work())
        reports.put(None)
    except BaseException as e:
        reports.put(f"{type(e).__name__}: {e}")


async def columns_of(conn: asyncpg.Connection | asyncpg.Pool, table: str) -> list[str]:
    """The live view's stored columns (not the generated ones: those follow from the rest)."""
    return [
        r["attname"]
        for r in await conn.fetch(
            """SELECT attname FROM pg_attribute
                WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
                ORDER BY attnum""",
            f"public.{table}",
        )
    ]


SCOPE = "($1::uuid IS NULL OR org_id = $1)"  # the rows of one organization, or all


def _unmatched(table: str, keys: str, listed: str, a: str, b: str) -> str:
    """The keys of the rows of `a`.`table` that `b`.`table` has no equal of."""
    return f"""SELECT {keys} FROM (SELECT {listed} FROM {a}.{table} WHERE {SCOPE}
                                  EXCEPT SELECT {listed} FROM {b}.{table} WHERE {SCOPE}) d"""


async def compare(
    conn: asyncpg.Connection, schema: str, org_id: UUID | None, samples: int = 10
) -> list[Difference]:
    """Each live view against its rebuilt copy in `schema`: the keys of the rows that differ."""
    out = []
    for table, key in VIEWS.items():
        cols = await columns_of(conn, table)
        listed, keys = ", ".join(f'"{c}"' for c in cols), ", ".join(key)
        stale = {
            tuple(r)
            for r in await conn.fetch(_unmatched(table, keys, listed, "public", f'"{schema}"'), org_id)
        }
        rebuilt = {
            tuple(r)
            for r in await conn.fetch(_unmatched(table, keys, listed, f'"{schema}"', "public"), org_id)
        }
        diff = Difference(
            table,
            changed=sorted(stale & rebuilt),
            missing=sorted(rebuilt - stale),
            unexplained=sorted(stale - rebuilt),
        )
        for k in diff.changed[:samples]:
            match = " AND ".join(f"{c} = ${i + 1}" for i, c in enumerate(key))
            live = await conn.fetchrow(f"SELECT {listed} FROM public.{table} WHERE {match}", *k)
            new = await conn.fetchrow(f'SELECT {listed} FROM "{schema}".{table} WHERE {match}', *k)
            diff.columns[k] = [c for c in cols if live[c] != new[c]]
        out.append(diff)
    return out


async def swap(conn: asyncpg.Connection, schema: str, org_id: UUID | None) -> None:
    """Make the live views equal to the rebuilt ones (in the caller's transaction, the views locked):
    every rebuilt row written where the live one differs or is missing, every live row the rebuild has
    no key for removed."""
    for table, key in VIEWS.items():
        cols = await columns_of(conn, table)
        listed, keys = ", ".join(f'"{c}"' for c in cols), ", ".join(key)
        sets = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in cols if c not in key)
        await conn.execute(
            f"""INSERT INTO public.{table} ({listed})
                SELECT {listed} FROM "{schema}".{table} WHERE {SCOPE}
                EXCEPT SELECT {listed} FROM public.{table} WHERE {SCOPE}
                ON CONFLICT ({keys}) DO UPDATE SET {sets}""",
            org_id,
        )
        joined = " AND ".join(f"r.{c} = l.{c}" for c in key)
        await conn.execute(
            f"""DELETE FROM public.{table} l WHERE ($1::uuid IS NULL OR l.org_id = $1)
                  AND NOT EXISTS (SELECT 1 FROM "{schema}".{table} r WHERE {joined})""",
            org_id,
        )


async def cut(conn: asyncpg.Connection, org_id: UUID | None) -> bool:
    """Whether retention dropped events of these organizations (or any) from the archive: views rebuilt
    from what remains would lack the messages of the months dropped."""
    return await conn.fetchval(
        "SELECT exists(SELECT 1 FROM archive_heads WHERE dropped_seq > 0 AND ($1::uuid IS NULL OR org_id = $1))",
        org_id,
    )


class NotSettled(Exception):
    """The live views applied events the archive does not hold (yet)."""


async def unarchived(conn: asyncpg.Connection, until: datetime | None = None) -> int:
    """How many events the live views applied lately (up to `until`, if given) that the archive does
    not hold."""
    return await conn.fetchval(
        f"""SELECT count(*) FROM processed_events p
             WHERE p.consumer = $1 AND p.processed_at > now() - interval '{ARCHIVE_LAG}'
               AND ($2::timestamptz IS NULL OR p.processed_at <= $2)
               AND NOT EXISTS (SELECT 1 FROM event_archive a WHERE a.event_id = p.event_id)""",
        CONSUMER,
        until,
    )


async def settle(
    conn: asyncpg.Connection, rebuild: Rebuild, wait_s: float, progress: Progress | None = None
) -> None:
    """With the live views locked (in `conn`'s transaction): wait until the archive holds every event
    they applied, then bring the rebuild up to date. Raises NotSettled after `wait_s`."""
    await conn.execute(f"LOCK TABLE {', '.join(VIEWS)} IN EXCLUSIVE MODE")
    deadline = time.monotonic() + wait_s
    while missing := await unarchived(conn):
        if time.monotonic() > deadline:
            raise NotSettled(f"{missing} events the live views applied are not in the archive")
        await asyncio.sleep(0.1)
    await rebuild.run(progress)
