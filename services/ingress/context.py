"""What every handler of the ingress can reach: settings, the pool, the producer, the decision waiter."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg
from aiohttp import web
from faststream.kafka import KafkaBroker

from schemas.envelope import Envelope
from services.common.broker import publish_events
from services.common.decided import Answer
from services.common.secrets import Secrets
from services.common.settings import IngressSettings
from services.ingress.cache import Cache
from services.ingress.decisions import DecisionWaiter
from services.ingress.http import ApiError, Call


@dataclass
class Context:
    settings: IngressSettings
    pool: asyncpg.Pool
    broker: KafkaBroker
    waiter: DecisionWaiter
    cache: Cache
    secrets: Secrets

    async def publish(self, events: list[Envelope]) -> None:
        """Publish, or answer 503 with Retry-After: the client must not take a failure for a success."""
        try:
            await asyncio.wait_for(
                publish_events(self.broker, self.settings, events), self.settings.publish_timeout_s
            )
        except Exception as exc:
            raise ApiError(
                503,
                "unavailable",
                f"the event log is unavailable ({type(exc).__name__}); retry later",
                {"Retry-After": "5"},
            ) from exc

    async def submit(self, request: Envelope) -> list[Answer]:
        """Publish a request and wait (bounded) for the answers of its decisions; none on timeout."""
        self.waiter.expect(request.event_id)
        try:
            await self.publish([request])
        except ApiError:
            self.waiter.forget(request.event_id)
            raise
        return await self.waiter.wait(request.event_id, self.settings.decision_timeout_s)


CONTEXT = web.AppKey("context", Context)


def ctx(call: Call) -> Context:
    return call.app[CONTEXT]
