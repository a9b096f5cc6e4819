"""What every handler of the ingress can reach: settings, the pool, the producer, the decision waiter."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from uuid import UUID

import asyncpg
import structlog
from aiohttp import web
from faststream.exceptions import IncorrectState
from faststream.kafka import KafkaBroker

from schemas.envelope import Envelope
from services.common import redrive
from services.common.broker import PERMANENT_KAFKA_ERRORS, EventTooLarge, is_transient, publish_events
from services.common.decided import Answer
from services.common.secrets import Secrets
from services.common.settings import IngressSettings
from services.ingress.cache import Cache
from services.ingress.decisions import DecisionWaiter
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

    async def submit(self, request: Envelope, message_ids: list[UUID]) -> list[Answer]:
        """Publish a request and wait (bounded) for the answers of its decisions; none on timeout.

        A request answered before it was decided (`queued`) is watched until it is: should its event be
        lost with the log, it is published again (services/common/redrive.py)."""
        self.waiter.expect(request.event_id)
        try:
            await self.publish([request])
        except ApiError:
            self.waiter.forget(request.event_id)
            raise
        answers = await self.waiter.wait(request.event_id, self.settings.decision_timeout_s)
        if len(answers) < len(message_ids):
            try:
                await redrive.watch_undecided(self.pool, request, message_ids, self.settings.redrive_after_s)
            except Exception as exc:  # the request is on the log: answer as queued all the same
                log.error("could not watch an undecided request", error=repr(exc))
        return answers


CONTEXT = web.AppKey("context", Context)


def ctx(call: Call) -> Context:
    return call.app[CONTEXT]
