"""The ingress's admission bounds (services/ingress/admission.py); the overload itself: tests/integration/test_overload.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from services.ingress.admission import Admission
from services.ingress.http import ApiError


def test_admission_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Room for `max` sends; past a floor of max/8, a queue whose oldest waited too long sheds too."""
    now = [100.0]
    monkeypatch.setattr("services.ingress.admission.time.monotonic", lambda: now[0])
    a = Admission(max_in_flight=16, shed_after_s=0.5)

    def enter() -> Callable[[], None]:
        cm = a.admit()
        cm.__enter__()
        return lambda: cm.__exit__(None, None, None)

    slow = enter()  # one send that hangs (decide restarting): alone, it sheds nothing
    now[0] += 5
    leave = enter()
    leave()
    more = [enter() for _ in range(1)]  # two in flight now, the floor is 2, the oldest waited 5 s
    with pytest.raises(ApiError) as info:
        enter()
    assert info.value.status == 503 and info.value.headers == {"Retry-After": "1"}
    slow()
    for done in more:
        done()
    full = [enter() for _ in range(16)]
    with pytest.raises(ApiError):
        enter()
    full.pop()()
    enter()  # room again
