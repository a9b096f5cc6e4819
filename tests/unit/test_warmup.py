"""A mailbox's warm-up ramp (schemas/warmup.py), with the clock moved by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.warmup import Warmup, effective_daily_limit

BEGAN = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
RAMP = Warmup(start_per_day=5, increase_per_day=3, started_at=BEGAN)


def test_the_limit_grows_by_the_increase_each_whole_day_and_never_past_the_daily_limit() -> None:
    at = {d: BEGAN + d for d in (timedelta(0), timedelta(days=1, seconds=-1), timedelta(days=1), timedelta(days=10))}
    assert [effective_daily_limit(None, RAMP, t) for t in at.values()] == [5, 5, 8, 35]
    assert [effective_daily_limit(20, RAMP, t) for t in at.values()] == [5, 5, 8, 20]


def test_no_ramp_is_the_daily_limit_and_a_ramp_set_to_begin_later_holds_at_its_start() -> None:
    assert effective_daily_limit(20, None, BEGAN) == 20 and effective_daily_limit(None, None, BEGAN) is None
    assert effective_daily_limit(None, RAMP, BEGAN - timedelta(days=3)) == 5
