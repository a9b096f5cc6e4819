"""When to try a deferred send again, and when to give up. Pure."""

from __future__ import annotations

from datetime import datetime, timedelta


def next_attempt_at(
    attempt: int, first_attempt_at: datetime, now: datetime, delays_s: list[float], max_age_s: float
) -> datetime | None:
    """The due time of the attempt after `attempt`, or None once the send's lifetime would be exceeded."""
    delay = delays_s[min(attempt - 1, len(delays_s) - 1)]
    due = now + timedelta(seconds=delay)
    if (due - first_attempt_at).total_seconds() > max_age_s:
        return None
    return due
