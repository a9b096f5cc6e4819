"""Scheduler: publishes due durable timers (services/common/timers.py), re-publishes the next event of
messages that made no progress (services/common/domain/redrive.py), and does hourly housekeeping.

Several schedulers may run: each locks the rows it publishes (FOR UPDATE SKIP LOCKED) and deletes them
in the same transaction after the broker acknowledged them. A crash between publish and commit
publishes them again, which consumers drop by `event_id`.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import structlog
from aiokafka.admin import AIOKafkaAdminClient

from schemas.events import Timed
from services.common import db, timers
from services.common.broker import ensure_topics, make_broker, publish_events
from services.common.domain import redrive
from services.common.domain.webhooks import queue
from services.common.logging import configure_logging
from services.common.notify import Listener
from services.common.service import Periodic, run, stop_event
from services.common.settings import SchedulerSettings

log = structlog.get_logger("sendstream.scheduler")


async def wait_any(events: list[asyncio.Event], timeout: float) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


async def publish_due(pool, broker, settings: SchedulerSettings) -> int:
    async with pool.acquire() as conn, conn.transaction():
        due = await timers.take_due(conn, settings.scheduler_batch)
        if due:
            await publish_events(broker, settings, due)
            # A scheduled send's firing, once published, is watched like any send on its way: lost with
            # the log, it is published again (watched only now, so nothing re-drives it before its time).
            after = datetime.now(UTC) + timedelta(seconds=settings.redrive_after_s)
            fired = [(e.payload.message_ids[0], e) for e in due if isinstance(e, Timed) and e.payload.fired]
            await redrive.watch_each(conn, fired, after)
            await timers.done(conn, due)
    return len(due)


async def watch_log(pool, settings: SchedulerSettings) -> int | None:
    """Is the broker's log still the one the re-drives were written against? A broker that lost it (the
    embedded one keeps it in memory and starts as a new cluster) gets its topics back, and every
    message in flight is re-driven at once instead of after its next wait, which may be long."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        cluster_id = (await admin.describe_cluster()).get("cluster_id")
    finally:
        await admin.close()
    if not cluster_id:
        return None  # a broker too old to say (Metadata before v2)
    async with pool.acquire() as conn:
        lost = await redrive.log_changed(conn, cluster_id)
    if lost is not None:
        await ensure_topics(settings)
        log.warning("the broker's log is not the one before: messages in flight are re-driven now",
                    cluster_id=cluster_id, in_flight=lost)  # fmt: skip
    return lost


async def redrive_overdue(pool, broker, settings: SchedulerSettings) -> int:
    """Publish again the next event of every message that made no progress (services/common/domain/redrive.py),
    all of them at once if the broker lost its log."""
    await watch_log(pool, settings)
    total = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            due = await redrive.redrive_due(conn, settings.redrive_after_s, settings.scheduler_batch)
            if due:
                await publish_events(broker, settings, due)
        total += len(due)
        if len(due) < settings.scheduler_batch:
            break
    if total:
        log.warning("messages made no progress; their next events were published again", count=total)
    return total


async def serve(settings: SchedulerSettings) -> None:
    pool = await db.create_pool(settings)
    await db.migrate(pool)
    await ensure_topics(settings)
    broker = make_broker(settings, client_id="scheduler")
    await broker.connect()
    stop = stop_event()

    async def housekeeping() -> None:  # beside the timers: a long delete never holds one back
        if removed := await db.forget_processed(pool, timedelta(days=settings.processed_retention_days)):
            log.info("old tracking rows removed", count=removed)
        if removed := await queue.forget_finished(pool, timedelta(days=settings.webhook_retention_days)):
            log.info("old webhook deliveries removed", count=removed)

    added = asyncio.Event()  # timers were added: the next may be due sooner than we planned to look
    listener = Listener(settings.database_url, timers.CHANNEL, lambda _: added.set(), added.set)
    await listener.start()
    hourly = Periodic("housekeeping", 3600, housekeeping)
    await hourly.start()
    redrives = Periodic(
        "redrive", min(5.0, settings.redrive_after_s / 4), lambda: redrive_overdue(pool, broker, settings)
    )
    await redrives.start()
    log.info("service started")
    try:
        while not stop.is_set():
            added.clear()
            try:
                published = await publish_due(pool, broker, settings)
                if published:
                    log.info("timers published", count=published)
                    if published == settings.scheduler_batch:
                        continue
                wait = await timers.next_due_in(pool)
            except Exception:
                log.exception("publishing due timers failed; will retry")
                wait = settings.consumer_retry_backoff_s
            pause = settings.scheduler_poll_s if wait is None else min(float(wait), settings.scheduler_poll_s)
            await wait_any([stop, added], pause)
    finally:
        await listener.stop()
        await redrives.stop()
        await hourly.stop()
        await broker.stop()
        await pool.close()


def main() -> None:
    settings = SchedulerSettings()
    configure_logging(settings.log_level, settings.log_format, service="scheduler")
    run(serve(settings), settings)
