"""Admission control for sends: shed early, before anything is published, instead of timing out late.

Past capacity a queue only grows: every request waits longer, and a request that times out after its
event reached the log is a send the client believes failed. So the ingress counts the sends it is
working on, and refuses a new one at once (503 `overloaded`, with Retry-After) when

- `sends_in_flight_max` are in flight already, or
- the pipeline is behind: of the sends waiting for their decision (from the publish to decide's
  answer), the oldest has waited `shed_after_s`, and at least an eighth of the maximum are waiting.
  (A few slow decisions alone, e.g. while decide restarts, shed nothing: they are answered `queued`.
  Time a send spends elsewhere, such as a dialect waiting for the views to show it, is not the
  pipeline's backlog and sheds nothing.)

A shed send has certainly not been published, so retrying it is always safe. What happens once a send
is admitted is services/ingress/core/send.py's: it is answered 202 (decided, or `queued` and watched
until it is), or, only when not even that can be known, 503 `outcome_unknown`, which says to retry with
the same Idempotency-Key and never invites a blind retry.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator

from prometheus_client import Counter, Gauge

from services.ingress.http import ApiError

SHED = Counter(
    "sendstream_sends_shed_total", "Sends refused at once because the ingress was overloaded", ["why"]
)
IN_FLIGHT = Gauge("sendstream_sends_in_flight", "Sends this ingress process is working on")
RETRY_AFTER_S = 1


class Admission:
    def __init__(self, max_in_flight: int, shed_after_s: float):
        self.max_in_flight = max_in_flight
        self.shed_after_s = shed_after_s
        self.floor = max(1, max_in_flight // 8)
        self.in_flight = 0
        self._waiting: dict[int, float] = {}  # sends waiting for their decision, oldest first
        self._tickets = itertools.count()

    def behind_s(self) -> float:
        """How long the oldest send waiting for its decision has waited."""
        first = next(iter(self._waiting.values()), None)
        return 0.0 if first is None else time.monotonic() - first

    def check(self) -> None:
        """Raise the shed answer if a new send is not to be taken now."""
        if self.in_flight >= self.max_in_flight:
            why = f"{self.in_flight} sends are in flight"
            SHED.labels("in_flight").inc()
        elif len(self._waiting) >= self.floor and (behind := self.behind_s()) > self.shed_after_s:
            why = f"the oldest send waiting for its decision has waited {behind:.1f} s"
            SHED.labels("behind").inc()
        else:
            return
        raise ApiError(
            503,
            "overloaded",
            f"the server is overloaded ({why}); this send was not accepted and nothing was sent: "
            f"retry after {RETRY_AFTER_S} s",
            {"Retry-After": str(RETRY_AFTER_S)},
        )

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Hold a place for one send while it runs, or raise the shed answer."""
        self.check()
        self.in_flight += 1
        IN_FLIGHT.inc()
        try:
            yield
        finally:
            self.in_flight -= 1
            IN_FLIGHT.dec()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """A send between its publish and decide's answer: what says how far behind the pipeline is."""
        ticket = next(self._tickets)
        self._waiting[ticket] = time.monotonic()
        try:
            yield
        finally:
            del self._waiting[ticket]
