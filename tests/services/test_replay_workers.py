"""`sendstream replay` with worker processes, against real PostgreSQL: the organizations shared out among
processes that read one snapshot rebuild the same views as one process does."""

from __future__ import annotations

import asyncpg
import pytest

from bench.replay import ORGS, events, load_archive
from projections import replay
from services.common.domain.blobs import blob_store
from services.common.settings import CommonSettings

pytestmark = pytest.mark.asyncio(loop_scope="session")

SENDS = 600


@pytest.fixture
async def archived(db: asyncpg.Pool, service_env: dict):
    """SENDS sends of ORGS new organizations in the archive (three events each); removed afterwards."""
    made = events(SENDS * 3)
    orgs = sorted({e.org_id for e, _ in made})
    plain = await asyncpg.create_pool(service_env["DATABASE_URL"], min_size=1, max_size=1)  # COPYs text
    try:
        await load_archive(plain, made)
    finally:
        await plain.close()
    yield orgs
    await db.execute("DELETE FROM event_archive WHERE org_id = ANY($1)", orgs)
    await db.execute("DELETE FROM archive_heads WHERE org_id = ANY($1)", orgs)


async def rows(db: asyncpg.Pool, schema: str, table: str) -> list[str]:
    return sorted(repr(tuple(r)) for r in await db.fetch(f"SELECT * FROM {schema}.{table}"))


async def test_workers_rebuild_the_views_one_process_rebuilds(
    db: asyncpg.Pool, service_env: dict, archived: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replay, "PARALLEL_FROM", 0)  # however little there is to do
    url = service_env["DATABASE_URL"]
    one = replay.Rebuild(url, "test_replay_one", None, orgs=archived, workers=1)
    blobs = blob_store(CommonSettings(database_url=url), db)  # as the command has (the workers make theirs)
    two = replay.Rebuild(url, "test_replay_two", blobs, orgs=archived, workers=2, batch=100)
    try:
        for r in (one, two):
            await r.create()
            assert await r.run() == SENDS * 3
        assert (one.processes, two.processes) == (1, 2)
        for table in replay.VIEWS:
            assert await rows(db, one.schema, table) == await rows(db, two.schema, table), table
        sent = await db.fetch(f"SELECT org_id, status FROM {two.schema}.messages")
        assert len(sent) == SENDS and {r["status"] for r in sent} == {"sent"}
        assert len({r["org_id"] for r in sent}) == ORGS
        assert await db.fetchval(f"SELECT count(*) FROM {two.schema}.conversations") == SENDS

        # nothing archived since: the next run (the catch-up) applies nothing
        assert await two.run() == 0
    finally:
        await one.drop()
        await two.drop()


async def test_a_failing_worker_fails_the_rebuild_and_says_why(
    service_env: dict, archived: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replay, "PARALLEL_FROM", 0)
    r = replay.Rebuild(service_env["DATABASE_URL"], "test_replay_never_made", None, orgs=archived, workers=2)
    with pytest.raises(RuntimeError, match="replay worker failed: UndefinedTableError"):
        await r.run()
