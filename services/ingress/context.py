"""What every handler of the ingress can reach: settings, the pool, the producer, the decision waiter."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg
import structlog
from aiohttp import web
from faststream.exceptions import IncorrectState
from faststream.kafka import KafkaBroker

from schemas.envelope import Envelope
from services.common.blobs import BlobStore
from services.common.broker import PERMANENT_KAFKA_ERRORS, EventTooLarge, is_transient, publish_events
from services.common.secrets import Secrets
from services.common.settings import IngressSettings
from services.ingress.cache import Cache
from services.ingress.decisions import DecisionWaiter
from services.ingress.feed import FeedWaiter
from services.ingress.http import ApiError, Call

log = structlog.get_logger("sendstream.ingress")

# Room left in every event for what the pipeline adds to a request's content in the events derived
# from it (mailbox, Message-ID, addresses, at most 20 thread references: services/decide/replies.py).
DERIVED_HEADROOM = 32 * 1024


@dataclass
class Context:
    settings: IngressSettings
    pool: asyncpg.Pool
    broker: KafkaBroker
    waiter: DecisionWaiter
    cache: Cache
    secrets: Secrets
    blobs: BlobStore
    feed: FeedWaiter

    async def publish(self, events: list[Envelope]) -> None:
        """Publish, or answer 413 for a request whose events cannot fit in the log, or 503 with
        Retry-After when the broker cannot take them now: the client must not take a failure for a success.

        A request's events must leave room for what the pipeline adds in the events derived from them
        (a decision carries the mailbox, the Message-ID and the thread's references), so each may use
        at most `max_event_bytes - DERIVED_HEADROOM`."""
        limit = self.settings.max_event_bytes - DERIVED_HEADROOM
        try:
            await asyncio.wait_for(
                publish_events(self.broker, self.settings, events, limit), self.settings.publish_timeout_s
            )
        except (EventTooLarge, *PERMANENT_KAFKA_ERRORS) as exc:
            size = f" ({exc.size} bytes once encoded)" if isinstance(exc, EventTooLarge) else ""
            raise ApiError(
                413,
                "payload_too_large",
                f"the message is too large to send{size}: its subject, bodies and headers may take at most "
                f"{limit} bytes in all",
            ) from exc
        except Exception as exc:
            # IncorrectState: the producer is not connected (not yet, or no longer).
            if not (is_transient(exc) or isinstance(exc, TimeoutError | IncorrectState)):
                raise
            raise ApiError(
                503,
                "unavailable",
                f"the event log is unavailable ({type(exc).__name__}); retry later",
                {"Retry-After": "5"},
            ) from exc


CONTEXT = web.AppKey("context", Context)


def ctx(call: Call) -> Context:
    return call.app[CONTEXT]
