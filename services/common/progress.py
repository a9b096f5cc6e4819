"""Whether each piece of a service's work is moving: a consumer or publisher that fails on and on (the
broker refusing it, the database gone) is stuck, and says so on its service's /readyz and in
`sendstream_stuck_seconds`, instead of looking ready while nothing goes out."""

from __future__ import annotations

import time

from prometheus_client import Gauge

STUCK_SECONDS = Gauge(
    "sendstream_stuck_seconds",
    "Seconds a consumer or publisher has been failing without one success (0: it is moving)",
    ["component"],
)


class Progress:
    def __init__(self, component: str):
        self.component = component
        self.failing_since: float | None = None
        self.last_error = ""
        STUCK_SECONDS.labels(component).set_function(self.stuck_for)
        PROGRESS.append(self)

    def failed(self, error: BaseException) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        self.last_error = f"{type(error).__name__}: {error}"[:300]

    def moved(self) -> None:
        self.failing_since = None

    def stuck_for(self) -> float:
        return 0.0 if self.failing_since is None else time.monotonic() - self.failing_since


PROGRESS: list[Progress] = []  # every component of this process


def stuck(after_s: float) -> list[str]:
    """The components of this process failing for longer than `after_s`, each with its last error."""
    return [
        f"{p.component}: failing for {p.stuck_for():.0f} s ({p.last_error})"
        for p in PROGRESS
        if p.stuck_for() > after_s
    ]
