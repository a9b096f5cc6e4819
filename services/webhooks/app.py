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
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import aiohttp
import asyncpg
import structlog
from faststream.kafka import KafkaBroker
from prometheus_client import Counter as Metric
from prometheus_client import Histogram

from schemas import dialects, ids, topics
from schemas.envelope import Envelope
from schemas.events import (
    WebhookAttemptPayload,
    WebhookDelivered,
    WebhookEndpointDisabled,
    WebhookEndpointDisabledPayload,
    WebhookFailed,
)
from schemas.webhooks import (
    DRAFT_TYPES,
    WEBHOOK_TYPES,
    body,
    carries_message,
    message_data,
    subscribed_name,
    webhook_type,
)
from services.common import db, service, timers
from services.common.batching import GroupCommit
from services.common.broker import subscribe
from services.common.domain import views
from services.common.domain.webhooks import queue, signing
from services.common.domain.webhooks.shown import own_body
from services.common.egress import Egress, GuardedResolver, UnsafeDestination
from services.common.notify import Listener
from services.common.secrets import Secrets
from services.common.settings import WebhookSettings
from services.webhooks.policy import Step, after_attempt, retry_after

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
    relevant = [e for e in events if webhook_type(e)]
    if not relevant:
        return 0
    # Read before the transaction (each of its statements would see what is committed when it starts
    # all the same): a batch no endpoint subscribes to costs one statement, and no transaction.
    endpoints: dict[UUID, list[asyncpg.Record]] = {}
    for row in await pool.fetch(
        "SELECT id, org_id, events, dialect, inbox_ids FROM webhook_endpoints WHERE org_id = ANY($1::uuid[]) AND enabled",
        list({e.org_id for e in relevant}),
    ):
        endpoints.setdefault(row["org_id"], []).append(row)
    # Events no endpoint subscribes to need no record: there is nothing to do twice.
    relevant = [
        e
        for e in relevant
        if any(subscribed_name(ep["events"], type_for(ep["dialect"], e)) for ep in endpoints.get(e.org_id, ()))
    ]
    if not relevant:
        return 0
    async with pool.acquire() as conn, conn.transaction():
        todo = await db.claim_new(conn, CONSUMER, relevant)
        if not todo:
            return 0
        # The messages view fills in what an event does not carry itself. The view is written by another
        # consumer: a message it does not have yet is waited for, briefly (then the event's facts alone).
        stored = await views.messages_filled(conn, list({e.payload.message_id for e in todo if not carries_message(e)}))
        identities = {e.identity_id for e in todo} | {s["identity_id"] for s in stored.values()}
        handles = {
            r["id"]: r["handle"]
            for r in await conn.fetch(
                "SELECT id, handle FROM identities WHERE id = ANY($1::uuid[])", list(identities - {None})
            )
        }
        rows = []
        for event in todo:
            data = None
            for endpoint in endpoints[event.org_id]:
                name = subscribed_name(endpoint["events"], type_for(endpoint["dialect"], event))
                if name is None or (endpoint["inbox_ids"] and event.identity_id not in endpoint["inbox_ids"]):
                    continue
                message_id = getattr(event.payload, "message_id", None)  # a draft's names none
                if endpoint["dialect"]:  # made through a dialect with webhooks of its own
                    text = await own_body(conn, endpoint["dialect"], name, event, stored.get(message_id), handles)
                    if text is None:
                        continue
                else:
                    data = data or message_data(event, stored.get(message_id), handles)
                    text = body(name, event.occurred_at, data)
                rows.append(
                    (
                        queue.delivery_id(endpoint["id"], event.event_id), endpoint["id"], event.org_id,
                        event.event_id, name, message_id, text,
                    )
                )  # fmt: skip
        if rows:
            await queue.insert(conn, rows)
    return len(rows)


def type_for(dialect: str | None, event: Envelope) -> str | None:
    """The webhook `event` is, as an endpoint made through `dialect` (None: /v1/webhooks') names it."""
    fmt = dialect and dialects.of(dialect).webhook_format
    return fmt.name_of(webhook_type(event)) if fmt else webhook_type(event)


def prefix_of(dialect: str | None) -> str:
    """The signature headers' prefix for an endpoint made through `dialect` (None: /v1/webhooks')."""
    fmt = dialect and dialects.of(dialect).webhook_format
    return fmt.header_prefix if fmt else signing.STANDARD


# --- delivery --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One finished attempt, to be recorded."""

    row: asyncpg.Record  # the claimed delivery and its endpoint
    started_at: datetime
    duration_ms: int
    status: int | None
    error: str
    answer: str
    step: Step


class Deliverer:
    """Claims due deliveries and POSTs them, each endpoint within its own in-flight bound.

    Each endpoint's claimed deliveries wait in a short local line (at most its in-flight bound again)
    so the next starts the moment one finishes; the line is topped up when it runs low, one claim for
    many deliveries. Their lease covers the wait: twice the request timeout, and a margin.
    """

    def __init__(self, pool: asyncpg.Pool, settings: WebhookSettings):
        self.pool, self.settings = pool, settings
        self.secrets = Secrets(settings.secret_keys)
        self.egress = Egress.of(settings)
        self.per_endpoint = settings.webhook_endpoint_concurrency
        self.inflight: Counter[UUID] = Counter()
        self.waiting: dict[UUID, deque[asyncpg.Record]] = {}
        self.tasks: set[asyncio.Task] = set()
        self.wake = asyncio.Event()
        self.lease = timedelta(seconds=settings.webhook_timeout_s * 2 + 5)
        self.session: aiohttp.ClientSession | None = None
        # Woken by new or retried deliveries of any process; after a reconnect, look at once.
        self.listener = Listener(
            settings.database_url, queue.CHANNEL, lambda _: self.wake.set(), self.wake.set
        )
        self.runner: asyncio.Task | None = None
        self.recorder: GroupCommit[Attempt, None] = GroupCommit(self.write)

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                resolver=GuardedResolver(self.egress), limit=self.settings.webhook_concurrency
            ),
            timeout=aiohttp.ClientTimeout(total=self.settings.webhook_timeout_s),
        )
        await self.listener.start()
        self.runner = asyncio.create_task(self.run(), name="webhook-deliverer")

    async def stop(self) -> None:
        await service.cancel(self.runner)
        self.waiting.clear()  # their leases run out and they are claimed again
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.listener.stop()
        if self.session:
            await self.session.close()

    async def run(self) -> None:
        while True:
            self.wake.clear()
            try:
                claimed, room = await self.claim()
                if claimed and claimed == room:
                    continue  # there may be more due
                pause = self.settings.webhook_poll_s
                due_in = await self.pool.fetchval(
                    """SELECT extract(epoch FROM min(next_attempt_at) - now())
                         FROM webhook_deliveries WHERE state = 'pending'"""
                )
                # Due already but not claimed: waiting behind a message's earlier event, or for a busy or
                # disabled endpoint. A finished attempt, a new delivery or the poll brings us back.
                if due_in is not None and float(due_in) > 0:
                    pause = min(pause, float(due_in))
            except Exception:
                log.exception("claiming webhook deliveries failed; will retry")
                pause = self.settings.consumer_retry_backoff_s
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):  # not wait_for: before 3.12 it can swallow a cancel
                    await self.wake.wait()

    async def claim(self) -> tuple[int, int]:
        """Claim due deliveries into the endpoints' lines; returns (claimed, room there was)."""
        held = Counter(self.inflight)
        for endpoint, line in self.waiting.items():
            held[endpoint] += len(line)
        room = 2 * self.settings.webhook_concurrency - held.total()
        if room <= 0:
            return 0, 0
        rows = await queue.claim(self.pool, room, dict(+held), 2 * self.per_endpoint, self.lease)
        for row in rows:
            self.waiting.setdefault(row["endpoint_id"], deque()).append(row)
        self.start_waiting()
        return len(rows), room

    def start_waiting(self) -> None:
        """Start waiting deliveries while their endpoint and the process have room."""
        for endpoint, line in list(self.waiting.items()):
            while line and self.inflight[endpoint] < self.per_endpoint:
                if len(self.tasks) >= self.settings.webhook_concurrency:
                    return
                self.inflight[endpoint] += 1
                task = asyncio.create_task(self.attempt(line.popleft()))
                self.tasks.add(task)
                task.add_done_callback(lambda t, e=endpoint: self.finished(t, e))
            if not line:
                del self.waiting[endpoint]

    def finished(self, task: asyncio.Task, endpoint_id: UUID) -> None:
        self.tasks.discard(task)
        self.inflight[endpoint_id] -= 1
        if self.inflight[endpoint_id] <= 0:
            del self.inflight[endpoint_id]
        if not task.cancelled() and task.exception():
            log.error("webhook attempt failed to record", exc_info=task.exception())
        self.start_waiting()
        if len(self.waiting.get(endpoint_id, ())) < self.per_endpoint // 2 + 1:
            self.wake.set()  # its line runs low: claim more

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
                    webhook_id, int(time.time()), row["body"], self.signing_secrets(row), prefix_of(row["dialect"])
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
            await self.recorder.submit(
                Attempt(row, started_at, round(elapsed * 1000), status, error, answer, step)
            )
            log.info(
                "webhook attempt", status_code=status, error=error or None, outcome=step.state,
                ms=round(elapsed * 1000, 1),
            )  # fmt: skip

    def attempt_fact(self, o: Attempt, now: datetime) -> Envelope:
        row = o.row
        payload = WebhookAttemptPayload(
            endpoint_id=row["endpoint_id"], delivery_id=row["id"], message_id=row["message_id"],
            event_type=row["event_type"], attempt=row["attempts"], status_code=o.status,
            duration_ms=o.duration_ms, error=o.error, next_attempt_at=o.step.next_attempt_at,
        )  # fmt: skip
        return (WebhookDelivered if o.step.state == "delivered" else WebhookFailed)(
            event_id=uuid.uuid5(row["id"], f"attempt:{row['attempts']}"),
            org_id=row["org_id"],
            causation_id=row["event_id"],
            occurred_at=now,
            payload=payload,
        )

    async def write(self, batch: list[Attempt]) -> list[None]:
        """Attempts that finished together, in one transaction: each attempt, its delivery's next step,
        its endpoint's health and its event (through the timer outbox)."""
        now = datetime.now(UTC)
        facts = [self.attempt_fact(o, now) for o in batch]
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                # A delivery removed meanwhile (its endpoint deleted) just has no attempt to record.
                """INSERT INTO webhook_attempts (delivery_id, attempt, started_at, duration_ms, status_code, error,
                                                  response)
                   SELECT $1, $2, $3, $4, $5, $6, $7
                    WHERE EXISTS (SELECT 1 FROM webhook_deliveries WHERE id = $1 FOR KEY SHARE)
                   ON CONFLICT DO NOTHING""",
                [(o.row["id"], o.row["attempts"], o.started_at, o.duration_ms, o.status, o.error, o.answer)
                 for o in batch],
            )  # fmt: skip
            # Only the latest claim moves a delivery on (an expired lease may have been claimed again).
            await conn.executemany(
                """UPDATE webhook_deliveries
                      SET state = $3, next_attempt_at = $4, last_status_code = $5, last_error = $6,
                          delivered_at = CASE WHEN $3 = 'delivered' THEN now() ELSE delivered_at END
                    WHERE id = $1 AND attempts = $2 AND state = 'pending'""",
                [(o.row["id"], o.row["attempts"], o.step.state, o.step.next_attempt_at, o.status, o.error)
                 for o in batch],
            )  # fmt: skip
            healthy = sorted({o.row["endpoint_id"] for o in batch if o.step.state == "delivered"})
            await conn.execute(
                """UPDATE webhook_endpoints SET failing_since = NULL
                    WHERE id = ANY($1::uuid[]) AND failing_since IS NOT NULL""",
                healthy,
            )
            for o in batch:
                if o.step.state != "delivered" and o.row["endpoint_id"] not in healthy:
                    facts += await self.endpoint_failed(conn, o, now)
            await timers.schedule_many(conn, facts, now)
        return [None] * len(batch)

    async def endpoint_failed(self, conn: asyncpg.Connection, o: Attempt, now: datetime) -> list[Envelope]:
        """Note the endpoint failing; disable it on 410 or after failing too long. Returns the facts to publish."""
        row, disable = o.row, o.step.disable
        failing_since = await conn.fetchval(
            "UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, $2) WHERE id = $1 RETURNING failing_since",
            row["endpoint_id"],
            o.started_at,
        )
        limit = self.settings.webhook_disable_after_s
        if not disable and failing_since and (now - failing_since).total_seconds() > limit:
            disable = f"every delivery failed for {limit / 86400:g} days"
        if not disable:
            return []
        disabled = await conn.fetchval(
            """UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2, updated_at = now()
                WHERE id = $1 AND enabled RETURNING true""",
            row["endpoint_id"],
            disable,
        )
        if not disabled:
            return []
        log.warning("webhook endpoint disabled", endpoint_id=str(row["endpoint_id"]), reason=disable)
        return [
            WebhookEndpointDisabled(
                event_id=uuid.uuid5(row["endpoint_id"], f"disabled:{row['id']}:{row['attempts']}"),
                org_id=row["org_id"],
                causation_id=row["event_id"],
                payload=WebhookEndpointDisabledPayload(
                    endpoint_id=row["endpoint_id"], url=row["url"], reason=disable
                ),
            )
        ]


# --- the service -----------------------------------------------------------------------------------


def build(broker: KafkaBroker, settings: WebhookSettings, pool: asyncpg.Pool) -> Deliverer:
    """Register the fan-out consumer on `broker`; returns the deliverer for the service to run."""
    deliverer = Deliverer(pool, settings)

    @subscribe(
        broker,
        settings,
        [topics.DECISIONS, topics.MESSAGES, topics.ADMIN],
        group=CONSUMER,
        path="trailing",
        offset_reset="latest",
        # the rest (accepted, deferred, ...) are not parsed
        only={kind.__name__ for kind in (*WEBHOOK_TYPES, *DRAFT_TYPES)},
    )
    async def on_events(events: list[Envelope]) -> None:
        """Queue a signed delivery of each message event for every endpoint subscribed to it."""
        if await fan_out(pool, events):
            deliverer.wake.set()

    return deliverer


def main() -> None:
    service.main("webhooks", WebhookSettings(), build)
