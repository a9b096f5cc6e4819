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
