"""Replay (projections/replay.py, `sendstream replay`): the views rebuilt from 1,000,000 archived events,
against the raw limit measured in the same run: a plain aiokafka consumer reading the same events, as
JSON, from the broker.

The archive is loaded directly (COPY) with a send's three events per message (SendRequested,
SendAccepted, MessageSent), across 10 organizations, chained as the archiver chains them. Then:
  raw     aiokafka produce and consume of the same event documents (one topic, 6 partitions), and
          parsing them alone (what any consumer of ours does to each event before anything else);
  rebuild events/s from the archive into an empty schema (what `sendstream replay` spends its time on);
  swap    comparing the rebuilt views with the live ones (empty here: every row differs) and writing
          them in, in one transaction.
Usage: `python -m bench.replay [--events 1000000]` (also run by `make bench`).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.send_pipeline import new_topic
from devstack.infra import ensure_infra
from projections import replay
from projections.archive import Archive, month_of
from projections.chain import GENESIS, link
from schemas.envelope import Envelope
from schemas.events import (
    Content,
    MessageSent,
    MessageSentPayload,
    RequestedMessage,
    SendAccepted,
    SendAcceptedPayload,
    SendRequested,
    SendRequestedPayload,
    SmtpReply,
    messages_of,
    parse_event,
)
from schemas.ids import new_id
from services.common import db

ORGS = 10


def events(n: int) -> list[tuple[Envelope, str]]:
    """`n` events with their documents (JSON): sends of one message each, their three events in order."""
    orgs = [(new_id(), new_id(), new_id()) for _ in range(ORGS)]
    start = datetime.now(UTC) - timedelta(days=1)
    out: list[str] = []
    for i in range((n + 2) // 3):
        org, identity, mailbox = orgs[i % ORGS]
        message, conv = new_id(), new_id()
        at = start + timedelta(milliseconds=i)
        to = f"lead-{i}@example.test"
        content = Content(subject=f"Step {i}", text=f"Hello lead {i}, a word about our offer.", html=None)
        request = SendRequested(
            org_id=org, identity_id=identity, occurred_at=at,
            payload=SendRequestedPayload(handle="sales@agents.example.test", content=content,
                                         messages=[RequestedMessage(message_id=message, conv_id=conv, to=to)]),
        )  # fmt: skip
        accepted = SendAccepted(
            **request.caused(), occurred_at=at + timedelta(milliseconds=5),
            payload=SendAcceptedPayload(message_id=message, conv_id=conv, mailbox_id=mailbox,
                                        mailbox_email="s@pool.example.test", affinity="new",
                                        rfc_message_id=f"<{message}@pool.example.test>",
                                        from_addr="s@pool.example.test", to=[to], content=content,
                                        daily_cap=1000, remaining=999),
        )  # fmt: skip
        sent = MessageSent(
            **accepted.caused(), occurred_at=at + timedelta(milliseconds=50),
            payload=MessageSentPayload(message_id=message, mailbox_id=mailbox, relay="relay:25",
                                       rfc_message_id=f"<{message}@pool.example.test>",
                                       reply=SmtpReply(code=250, message="2.0.0 queued")),
        )  # fmt: skip
        out += [(e, e.model_dump_json()) for e in (request, accepted, sent)]
    return out[:n]


async def load_archive(pool: asyncpg.Pool, made: list[tuple[Envelope, str]]) -> None:
    """The events into event_archive, each organization's chained as the archiver chains them."""
    parsed, documents = [e for e, _ in made], [d for _, d in made]
    await Archive(pool)._partitions_for({month_of(e.occurred_at) for e in parsed})
    heads: dict[uuid.UUID, tuple[int, bytes]] = {}
    rows = []
    async with pool.acquire() as conn:
        texts = await conn.fetchval(  # the hash covers PostgreSQL's rendering of the document
            "SELECT array_agg(d::jsonb::text ORDER BY i) FROM unnest($1::text[]) WITH ORDINALITY AS u(d, i)",
            documents,
        )
        for event, text in zip(parsed, texts, strict=True):
            seq, prev = heads.get(event.org_id, (0, GENESIS))
            digest = link(prev, event.org_id, seq + 1, text)
            heads[event.org_id] = (seq + 1, digest)
            rows.append((event.org_id, seq + 1, event.event_id, event.type, event.occurred_at, "bench", 0, seq,
                         messages_of(event), text, prev, digest))  # fmt: skip
        await conn.copy_records_to_table(
            "event_archive", records=rows,
            columns=["org_id", "seq", "event_id", "type", "occurred_at", "topic", "partition", "offset",
                     "message_ids", "event", "prev_hash", "hash"],
        )  # fmt: skip
        await conn.executemany(
            "INSERT INTO archive_heads (org_id, seq, hash) VALUES ($1, $2, $3)",
            [(org, seq, h) for org, (seq, h) in heads.items()],
        )
        await conn.execute("ANALYZE event_archive")


async def raw_kafka(bootstrap: str, documents: list[str]) -> tuple[float, float]:
    """(produce, consume) records/s of the documents through the broker with aiokafka alone."""
    topic = await new_topic(bootstrap, "replay")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=262144)
    await producer.start()
    try:
        started = time.perf_counter()
        futures = [
            await producer.send(topic, d.encode(), key=str(i % 500).encode()) for i, d in enumerate(documents)
        ]
        await asyncio.gather(*futures)
        produce = len(documents) / (time.perf_counter() - started)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_bytes=32 * 1024 * 1024,
    )  # fmt: skip
    await consumer.start()
    try:
        read, started = 0, time.perf_counter()
        while read < len(documents):
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            read += sum(len(b) for b in batches.values())
        consume = read / (time.perf_counter() - started)
    finally:
        await consumer.stop()
    return produce, consume


async def main(args: argparse.Namespace) -> None:
    data = Path(tempfile.mkdtemp(prefix="sendstream-bench-replay-"))
    data.chmod(0o755)
    infra = ensure_infra(data, durable=True)
    url = infra.env["DATABASE_URL"]
    try:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
        await db.migrate(pool)
        t = time.perf_counter()
        documents = events(args.events)
        made = time.perf_counter() - t
        produce, consume = await raw_kafka(infra.env["KAFKA_BOOTSTRAP_SERVERS"], [d for _, d in documents])
        with replay.rare_collections():  # as replay parses them
            t = time.perf_counter()
            for _, document in documents:
                parse_event(document)
            parse = len(documents) / (time.perf_counter() - t)
        t = time.perf_counter()
        await load_archive(pool, documents)
        loaded = time.perf_counter() - t
        del documents

        rebuild = replay.Rebuild(url, "sendstream_replay", None, batch=args.batch, workers=args.workers)
        await rebuild.create()
        t = time.perf_counter()
        applied = await rebuild.run()
        rebuilt = time.perf_counter() - t
        async with pool.acquire() as conn, conn.transaction():
            t = time.perf_counter()
            differences = await replay.compare(conn, rebuild.schema, None)
            compared = time.perf_counter() - t
            await replay.swap(conn, rebuild.schema, None)
            swapped = time.perf_counter() - t - compared
        messages = await pool.fetchval("SELECT count(*) FROM messages")
        await rebuild.drop()
        await pool.close()
    finally:
        infra.stop()
        shutil.rmtree(data, ignore_errors=True)

    rate = applied / rebuilt
    print(f"\nreplay bench: {args.events:,} archived events ({ORGS} organizations, 3 per send); "
          f"made in {made:.0f}s, archived (COPY) in {loaded:.0f}s")  # fmt: skip
    print("\nraw limits (same broker, same documents, this run)")
    print(f"  aiokafka produce, acks=all                    {produce:9.0f} events/s")
    print(f"  aiokafka consume (getmany, no processing)     {consume:9.0f} events/s")
    print(
        f"  parsing the events alone (pydantic)           {parse:9.0f} events/s   = {parse / consume:.2f} x raw consume"
    )
    print("\nsendstream replay")
    print(f"  rebuild from the archive                      {rate:9.0f} events/s   = {rate / consume:.2f} x raw consume"
          f"   ({applied:,} events, {rebuilt:.1f}s, batches of {args.batch}, {args.workers} workers)")  # fmt: skip
    print(f"  compare with the live views                   {compared:9.1f} s      "
          f"({sum(len(d.missing) for d in differences):,} rows missing from the empty live views)")  # fmt: skip
    print(f"  swap in (one transaction)                     {swapped:9.1f} s      ({messages:,} messages)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument(
        "--workers", type=int, default=replay.default_workers(), help="as sendstream replay's"
    )
    asyncio.run(main(parser.parse_args()))
