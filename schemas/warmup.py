"""A mailbox's warm-up ramp (SPEC 3.5): a new address earns its sending volume day by day. Pure.

Its effective daily limit is `min(dailyLimit, startPerDay + increasePerDay x whole days since the ramp
began)`; decide's affinity treats a mailbox at its effective limit as at its limit, and the identities
dialect shows the figure as `effectiveDailyLimit`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict


class Warmup(BaseModel):
    model_config = ConfigDict(frozen=True)

    start_per_day: int
    increase_per_day: int
    started_at: datetime


def effective_daily_limit(daily_limit: int | None, warmup: Warmup | None, now: datetime) -> int | None:
    """What the mailbox may send in a day at `now`: its daily limit, held down by its ramp (None: no limit)."""
    if warmup is None:
        return daily_limit
    days = max((now - warmup.started_at) // timedelta(days=1), 0)
    ramp = warmup.start_per_day + warmup.increase_per_day * days
    return ramp if daily_limit is None else min(daily_limit, ramp)


def warmup_of(row) -> Warmup | None:
    """The ramp kept on a mailbox's row (its `warmup_*` columns), if it has one."""
    if row["warmup_started_at"] is None:
        return None
    return Warmup(
        start_per_day=row["warmup_start_per_day"],
        increase_per_day=row["warmup_increase_per_day"],
        started_at=row["warmup_started_at"],
    )
