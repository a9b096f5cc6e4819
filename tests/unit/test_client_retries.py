"""The client's retries (clients/python): after 429/503 with Retry-After, and after a lost connection or
an `outcome_unknown` on a send, it asks again with the same Idempotency-Key (the server answers a repeat
from the first attempt, so nothing is sent twice); a send without a key gets one. Against httpx's
MockTransport: what is checked is what the client puts on the wire."""

from __future__ import annotations

import httpx
import pytest
from sendstream_client import OutcomeUnknown, RateLimited, Sendstream, Unavailable

ANSWER = {"accepted": 1, "rejected": 0, "remaining": 9, "dailyCap": 10, "identity": "a@x.test", "messages": []}


def client(answers: list, seen: list[httpx.Request], **kwargs) -> Sendstream:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    http = httpx.Client(base_url="http://sendstream.test", transport=httpx.MockTransport(handle))
    return Sendstream("http://sendstream.test", "sk_test", http=http, **kwargs)


def test_a_send_is_retried_after_retry_after_and_a_lost_connection_with_the_same_key() -> None:
    seen: list[httpx.Request] = []
    answers = [
        httpx.Response(503, json={"error": {"type": "overloaded", "message": "busy"}}, headers={"Retry-After": "0"}),
        httpx.ConnectError("reset"),
        httpx.Response(503, json={"error": {"type": "outcome_unknown", "message": "?"}}),
        httpx.Response(202, json=ANSWER),
    ]
    sent = client(answers, seen).send("a@x.test", "b@y.test", "Hi", text="t")
    assert sent.accepted == 1 and len(seen) == 4
    keys = {r.headers["Idempotency-Key"] for r in seen}
    assert len(keys) == 1 and keys != {""}


def test_errors_are_typed_and_carry_the_message_and_retry_after() -> None:
    seen: list[httpx.Request] = []
    limited = httpx.Response(429, json={"error": {"type": "rate_limited", "message": "daily cap"}}, headers={"Retry-After": "3600"})
    with pytest.raises(RateLimited) as refused:
        client([limited], seen).send("a@x.test", "b@y.test", "Hi", text="t")
    assert refused.value.retry_after == 3600 and refused.value.message == "daily cap" and len(seen) == 1  # too long to wait

    unknown = httpx.Response(503, json={"error": {"type": "outcome_unknown", "message": "?"}})
    with pytest.raises(OutcomeUnknown):
        client([unknown] * 3, seen, max_retries=2).send("a@x.test", "b@y.test", "Hi", text="t")
    with pytest.raises(Unavailable):  # a read without Retry-After's answer: no key, no blind retry needed
        client([httpx.Response(503, json={"error": {"type": "overloaded", "message": "x"}}, headers={"Retry-After": "0"})] * 4,
               seen, max_retries=3).list_identities()  # fmt: skip


def test_a_key_given_is_the_key_sent() -> None:
    seen: list[httpx.Request] = []
    client([httpx.Response(202, json=ANSWER)], seen).send("a@x.test", "b@y.test", "Hi", text="t", idempotency_key="mine-1")
    assert seen[0].headers["Idempotency-Key"] == "mine-1" and seen[0].headers["Authorization"] == "Bearer sk_test"
