"""What every handler of the ingress can reach: settings, the pool, the producer, the decision waiter."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import asyncpg
import structlog
from aiohttp import web
from faststream.exceptions import IncorrectState
from faststream.kafka import KafkaBroker

from schemas.envelope import Envelope
from services.common.broker import PERMANENT_KAFKA_ERRORS, EventTooLarge, hand_over, is_transient
from services.common.domain.blobs import BlobStore
from services.common.secrets import Secrets
from services.common.settings import IngressSettings
from services.ingress.admission import Admission
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
    admission: Admission = field(default_factory=lambda: Admission(10**9, float("inf")))

    async def publish(self, events: list[Envelope]) -> None:
        """Publish, and return once the broker confirmed every event. Otherwise:

        - 413 for a request whose events cannot fit in the log. A request's events must leave room for
          what the pipeline adds in the events derived from them (a decision carries the mailbox, the
          Message-ID and the thread's references), so each may use at most
          `max_event_bytes - DERIVED_HEADROOM`;
        - 503 with Retry-After when none of them can have reached the broker (it is not connected, or
          refused them before taking them): a retry is safe;
        - `MaybePublished` when they were handed over but not confirmed in time: they may be on the log.
          The caller must not invite a blind retry (services/ingress/core/send.py answers `queued`)."""
        limit = self.settings.max_event_bytes - DERIVED_HEADROOM
        deadline = time.monotonic() + self.settings.publish_timeout_s
        try:
            acks = await asyncio.wait_for(
                hand_over(self.broker, self.settings, events, limit), self.settings.publish_timeout_s
            )
        except (EventTooLarge, *PERMANENT_KAFKA_ERRORS) as exc:
            raise self._too_large(exc, limit) from exc
        except TimeoutError as exc:  # cut off while handing over: some may be on their way
            raise MaybePublished(exc) from exc
        except Exception as exc:
            # IncorrectState: the producer is not connected (not yet, or no longer).
            if not (is_transient(exc) or isinstance(exc, IncorrectState)):
                raise
            raise ApiError(
                503,
                "unavailable",
                f"the event log is unavailable ({type(exc).__name__}); nothing was sent: retry later",
                {"Retry-After": "5"},
            ) from exc
        try:
            # Shielded: a time-out leaves the acknowledgements to come (and ring the consumers) all the same;
            # a failure after it is the re-drive's to mend, so it is retrieved here, not left unread.
            confirmed = asyncio.gather(*acks)
            confirmed.add_done_callback(lambda f: f.cancelled() or f.exception())
            await asyncio.wait_for(asyncio.shield(confirmed), max(0.0, deadline - time.monotonic()))
        except PERMANENT_KAFKA_ERRORS as exc:  # refused by the broker: not written
            raise self._too_large(exc, limit) from exc
        except Exception as exc:
            if not (is_transient(exc) or isinstance(exc, TimeoutError)):
                raise
            raise MaybePublished(exc) from exc

    @staticmethod
    def _too_large(exc: BaseException, limit: int) -> ApiError:
        size = f" ({exc.size} bytes once encoded)" if isinstance(exc, EventTooLarge) else ""
        return ApiError(
            413,
            "payload_too_large",
            f"the message is too large to send{size}: its subject, bodies and headers may take at most "
            f"{limit} bytes in all",
        )


class MaybePublished(ApiError):
    """Events handed to the producer that the broker did not confirm in time: they may be on the log, and
    may yet be acted on. Answered as it is only where nothing better can be said: a retry must repeat the
    same events (the same Idempotency-Key), never make new ones."""

    def __init__(self, cause: BaseException, message: str | None = None):
        super().__init__(
            503,
            "outcome_unknown",
            message
            or f"the event log did not confirm this request in time ({type(cause).__name__}): it may have "
            "taken effect. Check before retrying, or retry with the same Idempotency-Key",
        )
        self.cause = cause


CONTEXT = web.AppKey("context", Context)


def ctx(call: Call) -> Context:
    return call.app[CONTEXT]
