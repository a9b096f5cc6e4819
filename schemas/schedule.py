"""When a scheduled send fires (SPEC 3.5), from what a request says: an RFC 3339 instant, or a local
date-time without offset plus an IANA `timezone`. Pure: the routes of every dialect use it to answer
400 naming the field, and the send carries the UTC instant.

- A local time the clocks skip in that zone (a spring-forward gap) does not exist: refused.
- A local time the clocks repeat (a fall-back hour) happens twice: the first of the two is taken, so a
  sequencer's 01:30 is never an hour late.
- An instant with an offset and a `timezone` as well must agree with that zone's offset then: two
  answers to "when" are refused rather than one of them dropped.
- In the past, or more than SCHEDULE_AHEAD_MAX ahead: refused.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from schemas.events import OnCapExceeded, StopOnReply
from schemas.limits import SCHEDULE_AHEAD_MAX_DAYS


class ScheduleError(ValueError):
    """What is wrong, worded with the request's own field name first (`sendAt: ...`)."""


def fire_at(value: str, timezone: str | None, now: datetime, *, field: str = "sendAt",
            zone_field: str = "timezone") -> datetime:  # fmt: skip
    """The UTC instant `value` names (see the module docstring); ScheduleError otherwise."""
    zone = None
    if timezone is not None:
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ScheduleError(f"{zone_field}: is not a known IANA time zone") from None
    try:
        written = datetime.fromisoformat(value.replace("z", "Z"))
    except (TypeError, ValueError):
        raise ScheduleError(
            f"{field}: is not a date-time (RFC 3339, e.g. 2026-12-08T15:00:00Z, or a local "
            f"2026-12-08T09:00:00 with {zone_field})"
        ) from None
    if written.tzinfo is not None:
        at = written.astimezone(UTC)
        if zone is not None and at.astimezone(zone).utcoffset() != written.utcoffset():
            raise ScheduleError(
                f"{field}: its offset {_offset(written)} is not {timezone}'s at that time "
                f"({_offset(at.astimezone(zone))}); give one or the other"
            )
    elif zone is None:
        raise ScheduleError(f"{field}: a local time without an offset needs {zone_field} (an IANA name)")
    else:
        local = written.replace(tzinfo=zone, fold=0)
        at = local.astimezone(UTC)
        if at.astimezone(zone).replace(tzinfo=None) != written:
            raise ScheduleError(f"{field}: {value} does not exist in {timezone} (the clocks skip it)")
    if at <= now:
        raise ScheduleError(f"{field}: is in the past ({at.isoformat().replace('+00:00', 'Z')})")
    if at - now > timedelta(days=SCHEDULE_AHEAD_MAX_DAYS):
        raise ScheduleError(f"{field}: is more than {SCHEDULE_AHEAD_MAX_DAYS} days ahead")
    return at


def _offset(at: datetime) -> str:
    minutes = int(at.utcoffset().total_seconds() // 60)  # type: ignore[union-attr]
    sign, minutes = ("-", -minutes) if minutes < 0 else ("+", minutes)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


@dataclass(frozen=True)
class Timing:
    """When a send goes out: now (`send_at` None) or at `send_at`, unless mail arrives in its conversation
    first (`unless_replied`); and whether the daily cap refuses it or defers it (`on_cap_exceeded`)."""

    send_at: datetime | None = None
    unless_replied: StopOnReply | None = None
    on_cap_exceeded: OnCapExceeded = "reject"

    def fields(self) -> dict[str, object]:
        """As a command's fields (schemas/commands.py: Timed)."""
        return asdict(self)


def timing(
    send_at: str | None,
    timezone: str | None,
    unless_replied: bool | Literal["any"] | None,
    now: datetime,
    *,
    reply: bool,
    names: tuple[str, str, str] = ("sendAt", "timezone", "unlessReplied"),
    on_cap_exceeded: OnCapExceeded | None = None,
) -> Timing:
    """A request's timing fields (named `names` in its dialect) as a Timing; ScheduleError naming the field.
    `reply`: the send goes into an existing conversation (only such a send can be overtaken by a reply)."""
    at_field, zone_field, unless_field = names
    at = None
    if send_at is not None:
        at = fire_at(send_at, timezone, now, field=at_field, zone_field=zone_field)
    elif timezone is not None:
        raise ScheduleError(f"{zone_field}: is only for a local {at_field}")
    stop: StopOnReply | None = "any" if unless_replied == "any" else "reply" if unless_replied else None
    if stop and not reply:
        raise ScheduleError(f"{unless_field}: is only for a send into an existing conversation (a reply)")
    if stop and at is None:
        raise ScheduleError(f"{unless_field}: needs {at_field} (a send made now cannot be overtaken by a reply)")
    return Timing(at, stop, on_cap_exceeded or "reject")
