"""What an attempt's answer means for its delivery: done, try again when, or give up. Pure.

2xx is success; anything else (3xx included: redirects are not followed), a timeout or a connection
error is a failure retried on the schedule; 410 Gone disables the endpoint. A 429 or 503 with
`Retry-After` waits at least that long (bounded by the schedule's longest wait).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Literal


@dataclass(frozen=True)
class Step:
    state: Literal["delivered", "pending", "failed"]
    next_attempt_at: datetime | None = None
    disable: str | None = None  # why the endpoint must be disabled, if it must


def after_attempt(
    status: int | None,
    attempt: int,
    now: datetime,
    schedule_s: list[float],
    retry_after_s: float | None = None,
    jitter: float = 0.1,
) -> Step:
    """The delivery's next step after its `attempt`-th attempt got `status` (None: no HTTP answer)."""
    if status is not None and 200 <= status < 300:
        return Step("delivered")
    if status == 410:
        return Step("failed", disable="the endpoint answered 410 Gone")
    if attempt > len(schedule_s):
        return Step("failed")
    delay = schedule_s[attempt - 1] * (1 + random.uniform(0, jitter))
    if retry_after_s is not None and status in (429, 503):
        delay = max(delay, min(retry_after_s, max(schedule_s)))
    return Step("pending", now + timedelta(seconds=delay))


def retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds a `Retry-After` header asks for (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        return max((parsedate_to_datetime(value) - now).total_seconds(), 0.0)
    except (TypeError, ValueError):
        return None
