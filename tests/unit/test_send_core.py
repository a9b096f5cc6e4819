"""The ingress core's send command, pure parts: the request event it makes, its outcome, the identities
dialect's rendering of that outcome."""

from __future__ import annotations

import uuid

from schemas.api.identities import send_response
from schemas.commands import NewSend, Reply
from schemas.events import Content, ReplyRequested, SendRequested
from schemas.ids import new_id
from services.common.domain.decided import Answer
from services.ingress.core.outcome import outcome_of
from services.ingress.core.send import request_event
from services.ingress.idempotency import IdSource

IDENTITY = {"id": new_id(), "org_id": new_id(), "handle": "agent@example.test", "daily_cap": 150}


def test_a_new_send_asks_for_one_message_and_conversation_per_recipient_with_derived_ids() -> None:
    """Ids come from the idempotency seed under fixed labels, so a retry repeats them exactly."""
    seed = uuid.uuid4()
    cmd = NewSend(
        identity_id=IDENTITY["id"],
        messages=[["a@x.test"], ["b@x.test"]],
        content=Content(subject="s", text="t"),
    )
    wanted, event = request_event(cmd, IDENTITY, IdSource(seed), "req-1")
    again, same = request_event(cmd, IDENTITY, IdSource(seed), "req-1")
    assert isinstance(event, SendRequested) and event.payload.messages == wanted == again
    assert event.event_id == same.event_id == uuid.uuid5(seed, "event")
    assert [m.to for m in wanted] == [["a@x.test"], ["b@x.test"]]
    assert wanted[1].message_id == uuid.uuid5(seed, "message:1")
    assert wanted[1].conv_id == uuid.uuid5(seed, "conversation:1")
    assert event.correlation_id == "req-1" and event.payload.handle == "agent@example.test"


def test_a_reply_asks_for_one_message_in_its_conversation() -> None:
    conv = new_id()
    cmd = Reply(identity_id=IDENTITY["id"], conv_id=conv, to="lead@x.test", content=Content(text="t"))
    [m], event = request_event(cmd, IDENTITY, IdSource(uuid.uuid4()), "req-2")
    assert isinstance(event, ReplyRequested)
    assert m.conv_id == event.payload.conv_id == conv and m.to == ["lead@x.test"]
    assert event.payload.message_id == m.message_id


def wanted_three():
    cmd = NewSend(
        identity_id=IDENTITY["id"],
        messages=[["a@x.test"], ["b@x.test"], ["c@x.test"]],
        content=Content(text="t"),
    )
    return request_event(cmd, IDENTITY, IdSource(), "r")[0]


def test_each_message_is_accepted_rejected_or_queued_and_usage_is_the_last_decisions() -> None:
    a, b, c = wanted_three()
    mailbox = new_id()
    answers = [
        Answer(type="SendAccepted", message_id=a.message_id, daily_cap=150, remaining=9, conv_id=a.conv_id,
               mailbox_id=mailbox, mailbox_email="s@tryacme.test", affinity="new", rfc_message_id="<1@t>"),
        Answer(type="SendRejected", message_id=b.message_id, daily_cap=150, remaining=9, reason="cap_exceeded"),
    ]  # fmt: skip
    outcome = outcome_of([a, b, c], answers, 150, None)
    assert [m.state for m in outcome.messages] == ["accepted", "rejected", "queued"]
    assert (outcome.daily_cap, outcome.remaining, outcome.rejected) == (150, 9, 1)
    response, status = send_response(outcome, "agent@example.test")
    assert status == 202 and (response.accepted, response.rejected) == (2, 1)
    first, second, third = response.messages
    assert first.status == "accepted" and first.id == "<1@t>" and first.account.email == "s@tryacme.test"
    assert second.status == "rejected" and second.reason == "cap_exceeded" and second.convId is None
    assert third.status == "queued" and third.convId and third.id is None


def test_with_no_answer_the_usage_read_by_the_caller_is_used_and_all_rejected_is_429() -> None:
    a, b, c = wanted_three()
    assert (outcome_of([a], [], 150, 42).remaining, outcome_of([a], [], 150, 42).daily_cap) == (42, 150)
    rejected = [Answer(type="SendRejected", message_id=m.message_id, daily_cap=5, remaining=0, reason="cap_exceeded")
                for m in (a, b, c)]  # fmt: skip
    response, status = send_response(outcome_of([a, b, c], rejected, 150, None), "agent@example.test")
    assert status == 429 and response.accepted == 0 and response.dailyCap == 5 and response.remaining == 0


def test_one_message_to_many_recipients_is_one_requested_message() -> None:
    """The inboxes dialect's send: one message, one conversation, every To address on it."""
    cmd = NewSend(identity_id=IDENTITY["id"], messages=[["a@x.test", "b@x.test"]],
                  content=Content(subject="s", text="t", cc=["c@x.test"], bcc=["d@x.test"]))  # fmt: skip
    [m], event = request_event(cmd, IDENTITY, IdSource(), "r")
    assert m.to == ["a@x.test", "b@x.test"] and m.counterpart == "a@x.test"
    assert event.payload.content.cc == ["c@x.test"] and event.payload.content.bcc == ["d@x.test"]
