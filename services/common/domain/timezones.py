"""Calendar days in an identity's time zone: the daily cap's window."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo


def local_day_start(now: datetime, timezone: str) -> datetime:
    """Midnight of `now`'s day in `timezone`, as an aware datetime."""
    local = now.astimezone(ZoneInfo(timezone))
    return local.replace(hour=0, minute=0, second=0, microsecond=0)
