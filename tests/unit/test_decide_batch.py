"""A batch of requests decided in order, and the state rows its decisions change (services/decide/batch.py),
driven without a broker or a database: (state, requests) -> (decisions, writes)."""

from __future__ import annotations

from datetime import date
from uuid import UUID

from schemas.events import (
    ArrivedMessage,
    BlobRef,
    Content,
    MessageArrived,
    MessageArrivedPayload,
    MessageReceived,
    SendAccepted,
    SendRejected,
)
from schemas.ids import new_id
from services.decide.batch import decide_in_order, state_writes
from tests.unit.test_decide import IDN, NOW, ORG, mailbox, request, state


def arrival(answering: str, conv_id: UUID, mailbox_id: UUID) -> MessageArrived:
    """A reply from the correspondent, its In-Reply-To naming `answering`, as the intake hands it on
    (in a new conversation of its own: the intake did not know the message it answers yet)."""
    return MessageArrived(
        org_id=ORG, identity_id=IDN,
        payload=MessageArrivedPayload(conv_id=conv_id, mailbox_id=mailbox_id, message=ArrivedMessage(
            message_id=new_id(), rfc_message_id=f"<{new_id()}@x.test>", from_addr="m@x.test",
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
