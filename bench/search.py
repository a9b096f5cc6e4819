"""Search latency of the inboxes dialect's `?query=` (services/common/domain/views.py) over 100,000 messages of
one inbox, against the raw limit measured in the same run: a one-row round trip to the same PostgreSQL.

Loads the messages view directly (COPY; the search column and its GIN index are the real ones), then
times single words, two words with the last as a prefix, senders, the plain newest-first listing, and
the mailboxes dialect's cursor pages (50 messages after a cursor anywhere in the list).
Usage: `python -m bench.search [--messages 100000]` (also run by `make bench`).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import asyncpg

from devstack.infra import start_postgres
from schemas.ids import new_id
from services.common.db import init_connection, migrate
from services.common.domain import views


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def ms(values: list[float]) -> str:
    return f"p50 {pct(values, 50) * 1000:7.2f} ms   p99 {pct(values, 99) * 1000:7.2f} ms"


def vocabulary(n: int, rng: random.Random) -> list[str]:
    syllables = [
        "ka",
        "lo",
        "mi",
        "ne",
        "ru",
        "sa",
        "ti",
        "vo",
        "ze",
        "pa",
        "qu",
        "do",
        "fe",
        "gi",
        "ho",
        "ju",
    ]
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    return sorted(words)


async def load(
    pool: asyncpg.Pool, n: int, words: list[str], rng: random.Random
) -> tuple[uuid.UUID, uuid.UUID]:
    org, identity = new_id(), new_id()
    await pool.execute("INSERT INTO organizations (id, name) VALUES ($1, 'bench')", org)
    await pool.execute(
        "INSERT INTO identities (id, org_id, handle, daily_cap, timezone) VALUES ($1, $2, 'bench@example.test', 1, 'UTC')",
        identity, org,
    )  # fmt: skip
    start = datetime.now(UTC) - timedelta(days=365)
    records = []
    for i in range(n):
        at = start + timedelta(seconds=i * 300)
        records.append((
            new_id(), org, identity, new_id(), "outbound", f"sender{rng.randint(1, 500)}@company{rng.randint(1, 50)}.test",
            [f"lead{i}@example.test"], " ".join(rng.choices(words, k=5)), " ".join(rng.choices(words, k=60)),
            "sent", 2, at, at,
        ))  # fmt: skip
    await pool.copy_records_to_table(
        "messages",
        records=records,
        columns=["id", "org_id", "identity_id", "conv_id", "direction", "from_addr", "to_addrs", "subject",
                 "text_body", "status", "status_rank", "created_at", "updated_at"],
    )  # fmt: skip
    await pool.execute("VACUUM ANALYZE messages")
    return org, identity


async def timed(reads: list[Callable[[], Awaitable[object]]]) -> list[float]:
    took = []
    for read in reads:
        started = time.perf_counter()
        await read()
        took.append(time.perf_counter() - started)
    return took


async def main(args: argparse.Namespace) -> None:
    rng = random.Random(20261201)
    data = Path(tempfile.mkdtemp(prefix="sendstream-bench-search-"))
    data.chmod(0o755)  # embedded PostgreSQL runs unprivileged when we are root
    url, stop = start_postgres(data / "pg", durable=False, log_path=data / "postgres.log")
    try:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2, init=init_connection)
        await migrate(pool)
        words = vocabulary(5000, rng)
        loading = time.perf_counter()
        org, identity = await load(pool, args.messages, words, rng)
        loaded_s = time.perf_counter() - loading
        raw = []
        for _ in range(500):
            started = time.perf_counter()
            await pool.fetchval("SELECT 1")
            raw.append(time.perf_counter() - started)
        queries = {
            "one word": [rng.choice(words) for _ in range(300)],
            "two words, the last a prefix": [
                f"{rng.choice(words)} {rng.choice(words)[:3]}" for _ in range(300)
            ],
            "a sender": [f"sender{rng.randint(1, 500)}" for _ in range(300)],
            "no query (newest first)": [None] * 300,
        }
        phases = {
            name: [partial(views.inbox_messages, pool, org, identity, q, 100) for q in qs]
            for name, qs in queries.items()
        }
        # The mailboxes dialect's pages: 50 messages after a cursor anywhere in the list (keyset).
        keysets = await pool.fetch(
            "SELECT created_at, id FROM messages WHERE identity_id = $1 ORDER BY random() LIMIT 300", identity
        )
        phases["a page of 50 after a cursor"] = [
            partial(views.mailbox_page, pool, org, identity, after=(k["created_at"], k["id"]), limit=50)
            for k in keysets
        ]
        results = {name: await timed(reads) for name, reads in phases.items()}
        await pool.close()
    finally:
        stop()
        shutil.rmtree(data, ignore_errors=True)
    print(f"\nsearch over {args.messages} messages of one inbox (loaded and indexed in {loaded_s:.1f} s)")
    print(f"  raw limit: one-row round trip to the same PostgreSQL   {ms(raw)}")
    for name, took in results.items():
        ratio = statistics.median(took) / statistics.median(raw)
        print(f"  {name:<34} {ms(took)}   = {ratio:5.1f} x the raw round trip (p50)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000)
    asyncio.run(main(parser.parse_args()))
