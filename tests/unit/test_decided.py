"""decide's notifications to the waiting ingress (services/common/domain/decided.py): pure functions."""

from __future__ import annotations

import json

from schemas.events import SendRejected, SendRejectedPayload
from schemas.ids import new_id
from services.common.domain.decided import Answer, notifications


def a_decision() -> SendRejected:
    payload = SendRejectedPayload(
        message_id=new_id(), conv_id=None, to=["a@x.test"], reason="cap_exceeded", daily_cap=5, remaining=0
    )
    return SendRejected(org_id=new_id(), payload=payload)


def test_notifications_stay_under_the_payload_limit_and_name_what_does_not_fit() -> None:
    many = {new_id(): [a_decision()] for _ in range(200)}
    huge = {new_id(): [a_decision() for _ in range(80)]}
    payloads = notifications({**many, **huge})
    assert len(payloads) > 1 and all(len(p.encode()) < 8000 for p in payloads)
    told = {k: v for p in payloads for k, v in json.loads(p).items()}
    assert set(told) == {str(k) for k in {**many, **huge}}
    assert told[str(next(iter(huge)))] is None
    some, [decision] = next(iter(many.items()))
    assert [Answer.model_validate(a) for a in told[str(some)]] == [Answer.of(decision)]
