"""When a scheduled send fires (schemas/schedule.py): instants, local times in a zone across daylight
saving changes, and the 400s naming the field."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas.schedule import ScheduleError, fire_at, timing

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CHICAGO = "America/Chicago"  # CST (-06:00) until 2026-03-08 02:00, then CDT (-05:00); back 2026-11-01


def test_an_instant_with_an_offset_or_z() -> None:
    assert fire_at("2026-03-02T09:00:00Z", None, NOW) == datetime(2026, 3, 2, 9, tzinfo=UTC)
    assert fire_at("2026-03-02T09:00:00-06:00", None, NOW) == datetime(2026, 3, 2, 15, tzinfo=UTC)
    assert fire_at("2026-03-02T09:00:00-06:00", CHICAGO, NOW) == datetime(2026, 3, 2, 15, tzinfo=UTC)


def test_nine_in_the_morning_local_lands_on_the_right_instant_either_side_of_a_dst_change() -> None:
    before = fire_at("2026-03-06T09:00:00", CHICAGO, NOW)  # a Friday, CST
    after = fire_at("2026-03-09T09:00:00", CHICAGO, NOW)  # the Monday after the clocks went forward
    assert before == datetime(2026, 3, 6, 15, tzinfo=UTC)
    assert after == datetime(2026, 3, 9, 14, tzinfo=UTC)  # 09:00 CDT, an hour earlier in UTC
    autumn = fire_at("2026-11-02T09:00:00", CHICAGO, NOW)  # the Monday after they went back
    assert autumn == datetime(2026, 11, 2, 15, tzinfo=UTC)


def test_a_repeated_local_time_is_its_first_occurrence() -> None:
    assert fire_at("2026-11-01T01:30:00", CHICAGO, NOW) == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)  # CDT


@pytest.mark.parametrize(
    ("value", "zone", "words"),
    [
        ("2026-03-08T02:30:00", CHICAGO, "sendAt: 2026-03-08T02:30:00 does not exist in America/Chicago"),
        ("2026-03-02T09:00:00", None, "sendAt: a local time without an offset needs timezone"),
        ("2026-03-02T09:00:00", "Mars/Olympus", "timezone: is not a known IANA time zone"),
        ("next tuesday", CHICAGO, "sendAt: is not a date-time"),
        ("2026-03-01T11:59:59Z", None, "sendAt: is in the past"),
        ("2027-03-02T12:00:00Z", None, "sendAt: is more than 365 days ahead"),
        ("2026-03-02T09:00:00-05:00", CHICAGO, "sendAt: its offset -05:00 is not America/Chicago's"),
    ],
)
def test_what_cannot_be_a_fire_time_is_refused_naming_the_field(value: str, zone: str | None, words: str) -> None:
    with pytest.raises(ScheduleError) as e:
        fire_at(value, zone, NOW)
    assert str(e.value).startswith(words), str(e.value)


def test_the_mailboxes_dialect_names_its_own_fields() -> None:
    with pytest.raises(ScheduleError, match=r"^send_at: "):
        fire_at("2026-03-02T09:00:00", None, NOW, field="send_at")


def test_stop_on_reply_is_only_for_a_scheduled_reply_and_a_zone_only_for_a_local_time() -> None:
    now = datetime(2026, 12, 6, 12, tzinfo=UTC)
    later = "2026-12-07T09:00:00Z"
    assert timing(later, None, True, now, reply=True).unless_replied == "reply"
    assert timing(later, None, "any", now, reply=True).unless_replied == "any"
    assert timing(None, None, None, now, reply=False, on_cap_exceeded="defer").fields()["on_cap_exceeded"] == "defer"
    for args, reply, words in [
        ((None, None, True), True, "unlessReplied: needs sendAt"),
        ((later, None, True), False, "unlessReplied: is only for a send into an existing conversation"),
        ((None, "Europe/Paris", None), False, "timezone: is only for a local sendAt"),
    ]:
        with pytest.raises(ScheduleError, match=words):
            timing(*args, now, reply=reply)
    with pytest.raises(ScheduleError, match="unless_replied: needs send_at"):
        timing(None, None, True, now, reply=True, names=("send_at", "timezone", "unless_replied"))
