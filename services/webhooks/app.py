"""Webhooks: message events -> a signed delivery per subscribed endpoint, retried until it lands.

Two halves in one process:
- the fan-out consumer (group `webhooks`) turns each message event into one `webhook_deliveries` row
  per matching endpoint of the organization, in the transaction that records the event as handled,
  and commits the offset only after that. The group starts at the end of the log the first time it
  exists (it never replays history into the outside world) and afterwards always resumes from its
  committed position (services/common/broker.py anchors new partitions at once).
- the deliverer claims due rows (FOR UPDATE SKIP LOCKED; the row is the delivery's durable timer),
  leases them past the request timeout, POSTs them, and records each attempt, the delivery's next
  step and the attempt's event (WebhookDelivered / WebhookFailed, via the timer outbox) in one
  transaction. A crash mid-attempt leaves the lease to expire, and the delivery is tried again:
  at least once, with the same `webhook-id`. Each endpoint has its own in-flight bound, so one slow
  endpoint never holds the others up, and a message's deliveries to one endpoint go in event order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from uuid import UUID

import aiohttp
import asyncpg
import structlog
from faststream.kafka import KafkaBroker
from prometheus_client import Counter as Metric
from prometheus_client import Histogram

from schemas import topics
from schemas.envelope import Envelope
from schemas.events import (
    WebhookAttemptPayload,
    WebhookDelivered,
    WebhookEndpointDisabled,
    WebhookEndpointDisabledPayload,
    WebhookFailed,
)
from schemas.webhooks import body, message_data, subscribed_name, webhook_type
from services.common import db, ids, service, timers
from services.common.broker import subscribe
from services.common.secrets import Secrets
from services.common.settings import WebhookSettings
from services.webhooks import queue, signing
from services.webhooks.egress import Egress, GuardedResolver, UnsafeDestination
from services.webhooks.policy import after_attempt, retry_after

CONSUMER = "webhooks"
ATTEMPTS = Metric("sendstream_webhook_attempts_total", "Webhook delivery attempts by outcome", ["outcome"])
LATENCY = Histogram(
    "sendstream_webhook_request_seconds",
    "Time endpoints took to answer",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
log = structlog.get_logger("sendstream.webhooks")


# --- fan-out ---------------------------------------------------------------------------------------


async def fan_out(pool: asyncpg.Pool, events: list[Envelope]) -> int:
    """Create the deliveries of `events` for every subscribed endpoint; returns how many were created."""
    relevant = [(e, t) for e in events if (t := webhook_type(e))]
    if not relevant:
        return 0
    async with pool.acquire() as conn, conn.transaction():
        fresh = await db.claim_many(conn, CONSUMER, [e.event_id for e, _ in relevant])
        todo = []
        for event, webhook in relevant:
            if event.event_id in fresh:
                fresh.discard(event.event_id)  # an event twice in one batch counts once
                todo.append((event, webhook))
        if not todo:
            return 0
        endpoints: dict[UUID, list[asyncpg.Record]] = {}
        for row in await conn.fetch(
            "SELECT id, org_id, events FROM webhook_endpoints WHERE org_id = ANY($1::uuid[]) AND enabled",
            list({e.org_id for e, _ in todo}),
        ):
            endpoints.setdefault(row["org_id"], []).append(row)
        todo = [(e, t) for e, t in todo if e.org_id in endpoints]
        if not todo:
            return 0
        message_ids = list({e.payload.message_id for e, _ in todo})
        stored = {
            r["id"]: dict(r)
            for r in await conn.fetch(
                """SELECT id, identity_id, conv_id, direction, mailbox_id, mailbox_email, from_addr, to_addrs,
                          subject, rfc_message_id FROM messages WHERE id = ANY($1::uuid[])""",
                message_ids,
            )
        }
        identities = {e.identity_id for e, _ in todo} | {s["identity_id"] for s in stored.values()}
        handles = {
            r["id"]: r["handle"]
            for r in await conn.fetch(
                "SELECT id, handle FROM identities WHERE id = ANY($1::uuid[])", list(identities - {None})
            )
        }
        rows = []
        for event, webhook in todo:
            data = None
            for endpoint in endpoints[event.org_id]:
                name = subscribed_name(endpoint["events"], webhook)
                if name is None:
                    continue
                data = data or message_data(event, stored.get(event.payload.message_id), handles)
                rows.append(
                    (
                        queue.delivery_id(endpoint["id"], event.event_id), endpoint["id"], event.org_id,
                        event.event_id, name, event.payload.message_id, body(name, event.occurred_at, data),
                    )
                )  # fmt: skip
        if rows:
            await queue.insert(conn, rows)
    return len(rows)


# --- delivery --------------------------------------------------------------------------------------


class Deliverer:
    """Claims due deliveries and POSTs them, each endpoint within its own in-flight bound."""

    def __init__(self, pool: asyncpg.Pool, settings: WebhookSettings):
        self.pool, self.settings = pool, settings
        self.secrets = Secrets(settings.secret_keys)
        self.egress = Egress(settings.webhook_allowed_networks)
        self.inflight: Counter[UUID] = Counter()
        self.tasks: set[asyncio.Task] = set()
        self.wake = asyncio.Event()
        self.lease = timedelta(seconds=settings.webhook_timeout_s * 1.5 + 2)
        self.session: aiohttp.ClientSession | None = None
        self.listener: asyncpg.Connection | None = None
        self.runner: asyncio.Task | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                resolver=GuardedResolver(self.egress), limit=self.settings.webhook_concurrency
            ),
            timeout=aiohttp.ClientTimeout(total=self.settings.webhook_timeout_s),
        )
        self.listener = await asyncpg.connect(self.settings.database_url)
        await self.listener.add_listener(queue.CHANNEL, lambda *_: self.wake.set())
        self.runner = asyncio.create_task(self.run(), name="webhook-deliverer")

    async def stop(self) -> None:
        if self.runner:
            self.runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.runner
        for task in list(self.tasks):
            task.cancel()  # its lease runs out and it is tried again
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.listener:
            await self.listener.close()
        if self.session:
            await self.session.close()

    async def run(self) -> None:
        while True:
            self.wake.clear()
            try:
                claimed, free = await self.claim_and_start()
                if claimed and claimed == free:
                    continue  # there may be more due
                pause = self.settings.webhook_poll_s
                due_in = await self.pool.fetchval(
                    """SELECT extract(epoch FROM min(next_attempt_at) - now())
                         FROM webhook_deliveries WHERE state = 'pending'"""
                )
                if due_in is not None:
                    pause = min(pause, max(float(due_in), 0.01))
            except Exception:
                log.exception("claiming webhook deliveries failed; will retry")
                pause = self.settings.consumer_retry_backoff_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), pause)

    async def claim_and_start(self) -> tuple[int, int]:
        free = self.settings.webhook_concurrency - len(self.tasks)
        if free <= 0:
            return 0, 0
        busy = [(e, n) for e, n in self.inflight.items() if n > 0]
        rows = await queue.claim(
            self.pool, free, dict(busy), self.settings.webhook_endpoint_concurrency, self.lease
        )
        for row in rows:
            self.inflight[row["endpoint_id"]] += 1
            task = asyncio.create_task(self.attempt(row))
            self.tasks.add(task)
            task.add_done_callback(lambda t, e=row["endpoint_id"]: self.finished(t, e))
        return len(rows), free

    def finished(self, task: asyncio.Task, endpoint_id: UUID) -> None:
        self.tasks.discard(task)
        self.inflight[endpoint_id] -= 1
        if self.inflight[endpoint_id] <= 0:
            del self.inflight[endpoint_id]
        if not task.cancelled() and task.exception():
            log.error("webhook attempt failed to record", exc_info=task.exception())
        self.wake.set()

    def signing_secrets(self, row: asyncpg.Record) -> list[str]:
        out = [self.secrets.open(row["secret"])]
        if (
            row["previous_secret"]
            and row["previous_expires_at"]
            and row["previous_expires_at"] > datetime.now(UTC)
        ):
            out.append(self.secrets.open(row["previous_secret"]))
        return out

    async def attempt(self, row: asyncpg.Record) -> None:
        """One POST of one delivery, and its record."""
        assert self.session is not None
        webhook_id = ids.render("delivery", row["id"])
        started_at = datetime.now(UTC)
        started = time.perf_counter()
        status, error, answer, wait = None, "", "", None
        with structlog.contextvars.bound_contextvars(
            event_id=str(row["event_id"]), message_id=str(row["message_id"]) if row["message_id"] else None,
            webhook_id=webhook_id, endpoint_id=str(row["endpoint_id"]), attempt=row["attempts"],
        ):  # fmt: skip
            try:
                await self.egress.check_url(row["url"])  # IP literals never reach the resolver
                headers = signing.headers(
                    webhook_id, int(time.time()), row["body"], self.signing_secrets(row)
                )
                async with self.session.post(
                    row["url"], data=row["body"].encode(), headers=headers, allow_redirects=False
                ) as response:
                    status = response.status
                    answer = (await response.content.read(512)).decode(errors="replace")
                    wait = retry_after(response.headers.get("Retry-After"), datetime.now(UTC))
            except UnsafeDestination as exc:
                error = f"refused: {exc}"
            except TimeoutError:
                error = f"timed out after {self.settings.webhook_timeout_s:g}s"
            except (aiohttp.ClientError, OSError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            elapsed = time.perf_counter() - started
            LATENCY.observe(elapsed)
            step = after_attempt(
                status, row["attempts"], datetime.now(UTC), self.settings.webhook_retry_schedule_s, wait
            )
            ATTEMPTS.labels(step.state).inc()
            await self.record(row, started_at, round(elapsed * 1000), status, error, answer, step)
            log.info(
                "webhook attempt", status_code=status, error=error or None, outcome=step.state,
                ms=round(elapsed * 1000, 1),
            )  # fmt: skip

    async def record(self, row, started_at, duration_ms, status, error, answer, step) -> None:
        """The attempt, the delivery's next step, the endpoint's health and the attempt's event, together."""
        now = datetime.now(UTC)
        payload = WebhookAttemptPayload(
            endpoint_id=row["endpoint_id"], delivery_id=row["id"], message_id=row["message_id"],
            event_type=row["event_type"], attempt=row["attempts"], status_code=status, duration_ms=duration_ms,
            error=error, next_attempt_at=step.next_attempt_at,
        )  # fmt: skip
        fact_type = WebhookDelivered if step.state == "delivered" else WebhookFailed
        facts: list[Envelope] = [
            fact_type(
                event_id=uuid.uuid5(row["id"], f"attempt:{row['attempts']}"),
                org_id=row["org_id"],
                causation_id=row["event_id"],
                occurred_at=now,
                payload=payload,
            )
        ]
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO webhook_attempts (delivery_id, attempt, started_at, duration_ms, status_code, error,
                                                  response)
                   VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING""",
                row["id"], row["attempts"], started_at, duration_ms, status, error, answer,
            )  # fmt: skip
            # Only the latest claim moves the delivery on (an expired lease may have been claimed again).
            await conn.execute(
                """UPDATE webhook_deliveries
                      SET state = $3, next_attempt_at = $4, last_status_code = $5, last_error = $6,
                          delivered_at = CASE WHEN $3 = 'delivered' THEN now() ELSE delivered_at END
                    WHERE id = $1 AND attempts = $2 AND state = 'pending'""",
                row["id"], row["attempts"], step.state, step.next_attempt_at, status, error,
            )  # fmt: skip
            disable = step.disable
            if step.state == "delivered":
                await conn.execute(
                    "UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL",
                    row["endpoint_id"],
                )
            else:
                failing_since = await conn.fetchval(
                    """UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, $2)
                        WHERE id = $1 RETURNING failing_since""",
                    row["endpoint_id"],
                    started_at,
                )
                if (
                    failing_since
                    and (now - failing_since).total_seconds() > self.settings.webhook_disable_after_s
                ):
                    disable = disable or (
                        f"every delivery failed for {self.settings.webhook_disable_after_s / 86400:g} days"
                    )
            if disable:
                disabled = await conn.fetchval(
                    """UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2, updated_at = now()
                        WHERE id = $1 AND enabled RETURNING true""",
                    row["endpoint_id"],
                    disable,
                )
                if disabled:
                    log.warning("webhook endpoint disabled", reason=disable)
                    facts.append(
                        WebhookEndpointDisabled(
                            event_id=uuid.uuid5(
                                row["endpoint_id"], f"disabled:{row['id']}:{row['attempts']}"
                            ),
                            org_id=row["org_id"],
                            causation_id=facts[0].event_id,
                            payload=WebhookEndpointDisabledPayload(
                                endpoint_id=row["endpoint_id"], url=row["url"], reason=disable
                            ),
                        )
                    )
            for fact in facts:
                await timers.schedule(conn, fact, now)


# --- the service -----------------------------------------------------------------------------------


def build(broker: KafkaBroker, settings: WebhookSettings, pool: asyncpg.Pool) -> Deliverer:
    """Register the fan-out consumer on `broker`; returns the deliverer for the service to run."""
    deliverer = Deliverer(pool, settings)

    @subscribe(broker, settings, [topics.DECISIONS, topics.MESSAGES], group=CONSUMER, offset_reset="latest")
    async def on_events(events: list[Envelope]) -> None:
        """Queue a signed delivery of each message event for every endpoint subscribed to it."""
        if await fan_out(pool, events):
            deliverer.wake.set()

    return deliverer


def main() -> None:
    service.main("webhooks", WebhookSettings(), build)
