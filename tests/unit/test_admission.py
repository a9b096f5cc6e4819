"""The ingress's admission bounds (services/ingress/admission.py); the overload itself: tests/integration/test_overload.py."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from services.ingress.admission import Admission
from services.ingress.http import ApiError


def test_room_for_max_sends_then_shed_at_once_with_retry_after() -> None:
    a = Admission(max_in_flight=16, shed_after_s=0.5)
    with ExitStack() as held:
        for _ in range(16):
            held.enter_context(a.admit())
        with pytest.raises(ApiError) as info:
            held.enter_context(a.admit())
        assert info.value.status == 503 and info.value.type == "overloaded"
        assert info.value.headers == {"Retry-After": "1"}
    with a.admit():  # room again
        pass


def test_sheds_while_the_pipeline_is_behind_not_for_slow_sends_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behind: at least max/8 sends wait for their decision and the oldest has waited `shed_after_s`. A
    send busy elsewhere (a dialect waiting for its views) is in flight but not waiting: it sheds nothing."""
    now = [100.0]
    monkeypatch.setattr("services.ingress.admission.time.monotonic", lambda: now[0])
    a = Admission(max_in_flight=16, shed_after_s=0.5)
    with ExitStack() as held:
        for _ in range(10):  # in flight for a long time, but not waiting for a decision
            held.enter_context(a.admit())
        now[0] += 5
        with a.admit():
            pass
        slow = ExitStack()
        slow.enter_context(a.waiting())  # one decision slow (decide restarting): alone, it sheds nothing
        now[0] += 5
        with a.admit():
            pass
        held.enter_context(a.waiting())  # two waiting now, the floor (16 / 8), the oldest for 5 s
        with pytest.raises(ApiError):
            a.check()
        slow.close()  # the slow one answered: the oldest waiting is recent again
        with a.admit():
            pass


def test_sheds_a_queue_longer_than_the_pipeline_answers_in_shed_after_s(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past capacity the queue is bounded by the rate decisions come at, not only by the oldest's age:
    with 4 decided in the last second and `shed_after_s` 0.5, more than 2 waiting is too many once the
    oldest has waited a quarter of 0.5 s; before that (a burst on an idle pipeline) nothing is shed."""
    now = [100.0]
    monkeypatch.setattr("services.ingress.admission.time.monotonic", lambda: now[0])
    a = Admission(max_in_flight=16, shed_after_s=0.5)
    for _ in range(4):
        with a.waiting():
            now[0] += 0.01
    with ExitStack() as held:
        for _ in range(3):
            held.enter_context(a.waiting())
        a.check()  # the oldest has just begun to wait
        now[0] += 0.2
        with pytest.raises(ApiError) as info:
            a.check()
        assert "3 sends wait for their decision, 4 were decided in the last second" in info.value.message
        now[0] += 1.0  # the decisions counted are over a second old: none in the last second
        with pytest.raises(ApiError):
            a.check()
    a.check()  # nothing waits
