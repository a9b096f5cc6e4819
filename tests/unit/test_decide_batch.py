"""A batch of requests decided in order, and the state rows its decisions change (services/decide/batch.py),
driven without a broker or a database: (state, requests) -> (decisions, writes)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from uuid import UUID

from schemas.events import (
    ArrivedMessage,
    BlobRef,
    CancelRequested,
    CancelRequestedPayload,
    Content,
    MessageArrived,
    MessageArrivedPayload,
    MessageReceived,
    ReplyRequested,
    ReplyRequestedPayload,
    SendAccepted,
    SendCancelled,
    SendRejected,
    SendRequested,
    SendScheduled,
    firing_id,
)
from schemas.ids import new_id
from services.decide.batch import Waiting, decide_in_order, firing, state_writes
from services.decide.replies import Thread
from tests.unit.test_decide import IDN, NOW, ORG, mailbox, request, state


def arrival(
    answering: str, conv_id: UUID, mailbox_id: UUID, from_addr: str = "m@x.test", auto_reply: bool = False
) -> MessageArrived:
    """A reply from the correspondent, its In-Reply-To naming `answering`, as the intake hands it on
    (in a new conversation of its own: the intake did not know the message it answers yet)."""
    return MessageArrived(
        org_id=ORG, identity_id=IDN,
        payload=MessageArrivedPayload(conv_id=conv_id, mailbox_id=mailbox_id, message=ArrivedMessage(
            message_id=new_id(), rfc_message_id=f"<{new_id()}@x.test>", from_addr=from_addr, auto_reply=auto_reply,
            to=["a@tryacme.test"], recipients=["a@tryacme.test"],
            content=Content(subject="Re: Hi", text="yes", in_reply_to=answering, references=[answering]),
            raw=BlobRef(sha256="0" * 64, size=1, content_type="message/rfc822"),
        )),
    )  # fmt: skip


def test_each_request_sees_what_the_ones_before_it_decided() -> None:
    """A cap of 2 recipients, three sends in one batch: the third is refused; the state says 2 used."""
    a = mailbox("a@tryacme.test")
    states = {IDN: state(a, cap=2)}
    sends = [request(f"r{i}@x.test") for i in range(3)]
    decided = decide_in_order(sends, states, {}, {}, NOW)
    kinds = [type(d) for e in sends for d in decided[e.event_id]]
    assert kinds == [SendAccepted, SendAccepted, SendRejected]
    assert decided[sends[2].event_id][0].payload.reason == "cap_exceeded"
    assert states[IDN].used_today == 2


def test_mail_answering_mail_that_arrived_earlier_in_the_batch_joins_its_conversation() -> None:
    """A backlog (mail sync catching up): the second message answers the first, which the intake had not
    seen threaded yet; decide, taking them in order, puts both in one conversation."""
    a = mailbox("a@tryacme.test")
    first = arrival(f"<{new_id()}@elsewhere.test>", new_id(), a.id)  # answers nothing of ours
    second = arrival(first.payload.message.rfc_message_id, new_id(), a.id)
    threads: dict = {}
    decided = decide_in_order([first, second], {IDN: state(a)}, threads, {}, NOW)
    [started], [joined] = decided[first.event_id], decided[second.event_id]
    assert isinstance(joined, MessageReceived) and started.payload.new_conversation
    assert joined.payload.conv_id == started.payload.conv_id and not joined.payload.new_conversation
    assert threads[started.payload.conv_id].refs[-1] == second.payload.message.rfc_message_id


def test_the_writes_sum_recipients_per_local_day_and_minute_and_pin_only_new_recipients() -> None:
    a = mailbox("a@tryacme.test")
    states = {IDN: state(a)}
    first, again = request("m@x.test"), request("M@x.test")  # the same recipient, its pin reused
    decided = decide_in_order([first, again], states, {}, {}, NOW)
    writes = state_writes(decided, {IDN: "Pacific/Auckland"})
    local_day = date(2026, 11, 23)  # noon UTC on the 22nd is the 23rd in Auckland
    assert dict(writes.usage) == {(IDN, local_day): 2}
    assert dict(writes.minutes) == {(a.id, NOW.replace(second=0, microsecond=0)): 2}
    assert writes.days[(a.id, local_day)][0] == 2
    assert writes.pins == {(IDN, "m@x.test"): (a.id, decided[first.event_id][0].occurred_at)}
    assert set(writes.threads) == {first.payload.messages[0].conv_id, again.payload.messages[0].conv_id}
    assert [len(c) for c in writes.columns()] == [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, *[2] * 9]


# --- scheduled sends (SPEC 3.5) ---------------------------------------------------------------------


def scheduled_request(*recipients: str, ahead: timedelta = timedelta(hours=1)) -> SendRequested:
    r = request(*recipients)
    return r.model_copy(update={"payload": r.payload.model_copy(update={"send_at": NOW + ahead})})


def cancel_of(message_id: UUID) -> CancelRequested:
    return CancelRequested(org_id=ORG, identity_id=IDN, payload=CancelRequestedPayload(message_id=message_id))


def test_a_send_for_later_waits_and_its_timer_carries_the_send_as_it_will_fire() -> None:
    a = mailbox("a@tryacme.test")
    later = scheduled_request("m@x.test", "n@x.test")
    states = {IDN: state(a)}
    decided = decide_in_order([later], states, {}, {}, NOW, Waiting())
    assert [type(d) for d in decided[later.event_id]] == [SendScheduled, SendScheduled]
    assert states[IDN].used_today == 0  # nothing counted until it fires
    writes = state_writes(decided, {}, {later.event_id: later})
    assert not writes.usage and not writes.pins
    first = later.payload.messages[0]
    due, fire = writes.timers[firing_id(first.message_id, NOW + timedelta(hours=1))]
    assert due == NOW + timedelta(hours=1) and writes.scheduled[first.message_id][3] == "scheduled"
    assert isinstance(fire, SendRequested) and fire.payload.fired and fire.payload.messages == [first]


def test_whichever_of_the_fire_and_a_cancel_is_decided_first_wins() -> None:
    a = mailbox("a@tryacme.test")
    later = scheduled_request("m@x.test")
    [m] = later.payload.messages
    fire = firing(later, m.message_id, later.payload.send_at)

    waiting = Waiting()
    decide_in_order([later], {IDN: state(a)}, {}, {}, NOW, waiting)
    decided = decide_in_order([cancel_of(m.message_id), fire], {IDN: state(a)}, {}, {}, NOW, waiting)
    assert [type(d) for ds in decided.values() for d in ds] == [SendCancelled]  # never sent
    assert waiting.states[m.message_id] == "cancelled"

    waiting = Waiting()
    decide_in_order([later], {IDN: state(a)}, {}, {}, NOW, waiting)
    cancel = cancel_of(m.message_id)
    decided = decide_in_order([fire, cancel], {IDN: state(a)}, {}, {}, NOW, waiting)
    assert [type(d) for d in decided[fire.event_id]] == [SendAccepted] and decided[cancel.event_id] == []
    writes = state_writes(decided, {IDN: "UTC"}, {fire.event_id: fire, cancel.event_id: cancel})
    assert writes.scheduled[m.message_id][3] == "fired" and sum(writes.usage.values()) == 1


def test_a_send_whose_time_has_come_by_the_time_it_is_decided_is_decided_at_once() -> None:
    late = scheduled_request("m@x.test", ahead=timedelta(seconds=-1))
    decided = decide_in_order([late], {IDN: state(mailbox("a@tryacme.test"))}, {}, {}, NOW, Waiting())
    assert [type(d) for d in decided[late.event_id]] == [SendAccepted]


# --- stop on reply (SPEC 3.5) -----------------------------------------------------------------------


def follow_up(thread: Thread, unless: str | None = "reply") -> ReplyRequested:
    """A reply into `thread` for an hour from now, stopped by mail arriving in it first (`unless`)."""
    return ReplyRequested(
        org_id=ORG, identity_id=IDN,
        payload=ReplyRequestedPayload(
            handle="h", message_id=new_id(), conv_id=thread.conv_id, content=Content(text="Following up"),
            send_at=NOW + timedelta(hours=1), unless_replied=unless,
        ),
    )  # fmt: skip


def conversation(a) -> Thread:
    rfc = f"<{new_id()}@tryacme.test>"
    return Thread(new_id(), a.id, "m@x.test", "Hi", rfc, (rfc,))


def decided_kinds(decided: dict) -> list[str]:
    return [d.type for ds in decided.values() for d in ds]


def test_a_reply_arriving_before_the_fire_cancels_the_follow_up_and_its_firing_finds_nothing_to_do() -> None:
    a = mailbox("a@tryacme.test")
    thread = conversation(a)
    later = follow_up(thread)
    waiting, threads = Waiting(), {thread.conv_id: thread}
    decided = decide_in_order([later], {IDN: state(a)}, threads, {}, NOW, waiting)
    [scheduled] = decided[later.event_id]
    assert isinstance(scheduled, SendScheduled) and scheduled.payload.to == ["m@x.test"]
    writes = state_writes(decided, {}, {later.event_id: later})
    assert writes.scheduled[later.payload.message_id][7] == "reply"

    answer = arrival(thread.last_rfc_message_id, new_id(), a.id)
    fire = firing(later, later.payload.message_id, later.payload.send_at)
    decided = decide_in_order(
        [answer, fire], {IDN: state(a)}, threads, {answer.event_id: thread.conv_id}, NOW, waiting
    )
    assert decided_kinds(decided) == ["MessageReceived", "SendCancelled"]  # the firing: nothing
    cancelled = decided[answer.event_id][1].payload
    assert (cancelled.message_id, cancelled.conv_id, cancelled.reason) == (
        later.payload.message_id, thread.conv_id, "replied"
    )  # fmt: skip


def test_the_fire_decided_first_sends_and_the_reply_after_it_cancels_nothing() -> None:
    a = mailbox("a@tryacme.test")
    thread = conversation(a)
    later = follow_up(thread)
    waiting, threads = Waiting(), {thread.conv_id: thread}
    decide_in_order([later], {IDN: state(a)}, threads, {}, NOW, waiting)
    fire = firing(later, later.payload.message_id, later.payload.send_at)
    answer = arrival(thread.last_rfc_message_id, new_id(), a.id)
    decided = decide_in_order([fire, answer], {IDN: state(a)}, threads, {answer.event_id: thread.conv_id}, NOW, waiting)
    assert decided_kinds(decided) == ["SendAccepted", "MessageReceived"]
    sent = decided[fire.event_id][0].payload
    assert sent.content.in_reply_to == thread.last_rfc_message_id and sent.conv_id == thread.conv_id


def test_an_auto_reply_stops_only_what_asked_for_any_and_our_own_mail_stops_nothing() -> None:
    a = mailbox("a@tryacme.test")
    thread = conversation(a)
    polite, strict = follow_up(thread, "reply"), follow_up(thread, "any")
    unconditional = follow_up(thread, None)
    waiting, threads = Waiting(), {thread.conv_id: thread}
    decide_in_order([polite, strict, unconditional], {IDN: state(a)}, threads, {}, NOW, waiting)

    ours = arrival(thread.last_rfc_message_id, new_id(), a.id, from_addr="A@tryacme.test")  # filed back
    away = arrival(thread.last_rfc_message_id, new_id(), a.id, auto_reply=True)
    found = {ours.event_id: thread.conv_id, away.event_id: thread.conv_id}
    decided = decide_in_order([ours, away], {IDN: state(a)}, threads, found, NOW, waiting)
    assert decided_kinds(decided) == ["MessageReceived", "MessageReceived", "SendCancelled"]
    assert decided[away.event_id][1].payload.message_id == strict.payload.message_id
    assert waiting.states[polite.payload.message_id] == "scheduled"
    assert waiting.states[unconditional.payload.message_id] == "scheduled"


# --- cap deferral (SPEC 3.5): a clock moved by handing decide another `now` -------------------------


def deferring(*recipients: str) -> SendRequested:
    r = request(*recipients)
    return r.model_copy(update={"payload": r.payload.model_copy(update={"on_cap_exceeded": "defer"})})


def test_a_recipient_over_the_cap_is_deferred_to_midnight_in_the_identitys_zone_and_sent_then() -> None:
    a = mailbox("a@tryacme.test")
    auckland = replace(state(a, cap=1), timezone="Pacific/Auckland")
    two = deferring("m@x.test", "n@x.test")
    waiting = Waiting()
    decided = decide_in_order([two], {IDN: auckland}, {}, {}, NOW, waiting)
    sent, later = decided[two.event_id]
    assert isinstance(sent, SendAccepted) and isinstance(later, SendScheduled)
    # noon UTC on 22 November is 01:00 on the 23rd in Auckland (UTC+13): the next window opens at
    # midnight on the 24th there, 11:00 UTC on the 23rd
    midnight = datetime(2026, 11, 23, 11, 0, tzinfo=UTC)
    assert (later.payload.send_at, later.payload.reason, later.payload.to) == (midnight, "cap_deferred", ["n@x.test"])
    writes = state_writes(decided, {IDN: "Pacific/Auckland"}, {two.event_id: two})
    fire = writes.timers[firing_id(later.payload.message_id, midnight)][1]
    assert fire.payload.fired and [m.to for m in fire.payload.messages] == [["n@x.test"]]

    # The clock moved past midnight: a new day with room, and the deferred recipient goes out.
    [accepted] = decide_in_order([fire], {IDN: auckland}, {}, {}, midnight + timedelta(seconds=1), waiting)[
        fire.event_id
    ]
    assert isinstance(accepted, SendAccepted) and accepted.payload.to == ["n@x.test"]
    assert waiting.states[later.payload.message_id] == "fired"


def test_a_deferred_send_finding_the_new_day_full_too_waits_for_the_next_one_and_fires_anew() -> None:
    a = mailbox("a@tryacme.test")
    full = replace(state(a, cap=1, used=1), timezone="UTC")
    one = deferring("m@x.test")
    waiting = Waiting()
    [later] = decide_in_order([one], {IDN: full}, {}, {}, NOW, waiting)[one.event_id]
    first = datetime(2026, 11, 23, tzinfo=UTC)
    assert later.payload.send_at == first
    fire = firing(one, later.payload.message_id, first)
    [again] = decide_in_order([fire], {IDN: full}, {}, {}, first + timedelta(seconds=1), waiting)[fire.event_id]
    assert isinstance(again, SendScheduled) and again.payload.send_at == first + timedelta(days=1)
    assert waiting.states[later.payload.message_id] == "scheduled"
    writes = state_writes({fire.event_id: [again]}, {IDN: "UTC"}, {fire.event_id: fire})
    [(event_id, (due, _))] = writes.timers.items()
    assert event_id != fire.event_id and due == first + timedelta(days=1)  # a new firing, not a repeat


def test_without_defer_the_cap_refuses_as_before() -> None:
    a = mailbox("a@tryacme.test")
    two = request("m@x.test", "n@x.test")
    decided = decide_in_order([two], {IDN: state(a, cap=1)}, {}, {}, NOW, Waiting())
    assert [d.type for d in decided[two.event_id]] == ["SendAccepted", "SendRejected"]
