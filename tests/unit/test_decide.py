"""The decision rules: cap, affinity (new / existing / reassigned), mailbox pick."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from schemas.events import (
    Content,
    RequestedMessage,
    SendAccepted,
    SendRejected,
    SendRequested,
    SendRequestedPayload,
)
from schemas.ids import new_id
from services.decide.affinity import IdentityState, MailboxState, decide_send, pick_mailbox, rfc_message_id

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
ORG, IDN = new_id(), new_id()


def request(*recipients: str) -> SendRequested:
    return SendRequested(
        org_id=ORG,
        identity_id=IDN,
        correlation_id="req-1",
        payload=SendRequestedPayload(
            handle="alice@example.test",
            messages=[RequestedMessage(message_id=new_id(), conv_id=new_id(), to=r) for r in recipients],
            content=Content(subject="Hi", text="x"),
        ),
    )


def mailbox(email: str, **kw) -> MailboxState:
    return MailboxState(
        id=kw.pop("id", new_id()),
        email=email,
        health=kw.pop("health", "healthy"),
        hourly_limit=kw.pop("hourly_limit", 600),
        daily_limit=kw.pop("daily_limit", None),
        **kw,
    )


def state(
    *mailboxes: MailboxState,
    cap: int = 150,
    used: int = 0,
    affinity: dict[str, UUID] | None = None,
    active: bool = True,
) -> IdentityState:
    return IdentityState(IDN, "alice@example.test", cap, used, tuple(mailboxes), affinity or {}, active)


def test_first_send_pins_a_mailbox_as_new() -> None:
    """No pin yet: a mailbox is picked and the decision says `new`."""
    a = mailbox("a@tryacme.test")
    [d] = decide_send(request("m@x.test"), state(a), NOW)
    assert isinstance(d, SendAccepted)
    assert d.payload.affinity == "new" and d.payload.mailbox_id == a.id and d.payload.from_addr == a.email
    assert d.payload.remaining == 149 and d.payload.daily_cap == 150
    assert d.causation_id is not None and d.correlation_id == "req-1"


def test_pinned_mailbox_is_reused_case_insensitively() -> None:
    """A pinned recipient keeps its mailbox (`existing`) even when another has more room."""
    a, b = mailbox("a@tryacme.test", sent_today=500), mailbox("b@tryacme.test")
    [d] = decide_send(request("M@X.test"), state(a, b, affinity={"m@x.test": a.id}), NOW)
    assert d.payload.affinity == "existing" and d.payload.mailbox_id == a.id


def test_unusable_pin_is_reassigned() -> None:
    """A paused, unhealthy or full pinned mailbox is replaced by another (`reassigned`)."""
    for bad in (
        dict(health="paused"),
        dict(health="unhealthy"),
        dict(sent_last_hour=600),
        dict(daily_limit=3, sent_today=3),
    ):
        a, b = mailbox("a@tryacme.test", **bad), mailbox("b@tryacme.test")
        [d] = decide_send(request("m@x.test"), state(a, b, affinity={"m@x.test": a.id}), NOW)
        assert d.payload.affinity == "reassigned" and d.payload.mailbox_id == b.id, bad


def test_pick_prefers_most_capacity_then_least_recently_used() -> None:
    """Most capacity left today wins; among equals, the least recently used."""
    full = mailbox("a@t.test", sent_today=10)
    old = mailbox("b@t.test", last_used_at=NOW - timedelta(hours=2))
    recent = mailbox("c@t.test", last_used_at=NOW - timedelta(minutes=1))
    assert pick_mailbox((full, recent, old)) == old
    assert pick_mailbox((mailbox("d@t.test", health="paused"),)) is None


def test_cap_counts_every_accepted_recipient() -> None:
    """With 2 left of the cap, the third recipient of one request is rejected `cap_exceeded`."""
    out = decide_send(
        request("a@x.test", "b@x.test", "c@x.test"), state(mailbox("s@t.test"), cap=10, used=8), NOW
    )
    assert [type(d) for d in out] == [SendAccepted, SendAccepted, SendRejected]
    assert [d.payload.remaining for d in out] == [1, 0, 0]
    assert out[2].payload.reason == "cap_exceeded"


def test_no_usable_mailbox_is_mailbox_unavailable() -> None:
    """Every mailbox paused: rejected `mailbox_unavailable`, and the cap is not charged."""
    [d] = decide_send(request("a@x.test"), state(mailbox("s@t.test", health="paused")), NOW)
    assert (
        isinstance(d, SendRejected)
        and d.payload.reason == "mailbox_unavailable"
        and d.payload.remaining == 150
    )


def test_deleted_identity_rejects() -> None:
    """A request that arrives after its identity was deleted is rejected, not sent."""
    [d] = decide_send(request("a@x.test"), state(mailbox("s@t.test"), active=False), NOW)
    assert isinstance(d, SendRejected) and d.payload.reason == "mailbox_unavailable"


def test_accepts_within_one_request_spread_by_capacity() -> None:
    """Each accept uses capacity, so a multi-recipient request spreads over equal mailboxes."""
    a, b = mailbox("a@t.test", daily_limit=100), mailbox("b@t.test", daily_limit=100)
    out = decide_send(request("x@x.test", "y@x.test"), state(a, b), NOW)
    assert {d.payload.mailbox_id for d in out} == {a.id, b.id}


def test_message_id_uses_mailbox_domain() -> None:
    """The RFC Message-ID is unique and on the sending mailbox's domain."""
    mid = new_id()
    assert rfc_message_id(mid, "alice.chen@tryacme.com") == f"<{mid}@tryacme.com>"


def one_message(to: list[str], cc: list[str] = (), bcc: list[str] = ()) -> SendRequested:
    return SendRequested(org_id=ORG, identity_id=IDN, payload=SendRequestedPayload(
        handle="alice@example.test", messages=[RequestedMessage(message_id=new_id(), conv_id=new_id(), to=to)],
        content=Content(subject="Hi", text="x", cc=list(cc), bcc=list(bcc))))  # fmt: skip


def test_one_message_to_many_counts_every_recipient_against_the_cap() -> None:
    """To, Cc and Bcc all count: 4 recipients fit a cap with 4 left, not one with 3 left."""
    a = mailbox("a@tryacme.test")
    req = one_message(["m@x.test", "n@x.test"], cc=["c@x.test"], bcc=["b@x.test"])
    [d] = decide_send(req, state(a, cap=10, used=6), NOW)
    assert isinstance(d, SendAccepted) and d.payload.remaining == 0
    assert d.payload.to == ["m@x.test", "n@x.test"] and d.payload.affinity == "new"
    [r] = decide_send(req, state(a, cap=10, used=7), NOW)
    assert isinstance(r, SendRejected) and r.payload.reason == "cap_exceeded"
    assert r.payload.to == ["m@x.test", "n@x.test"]


def test_a_mailbox_needs_room_for_every_recipient_of_a_message() -> None:
    """The rolling hour counts recipients: a mailbox with room for 2 cannot take a message to 3."""
    small = mailbox("small@tryacme.test", hourly_limit=10, sent_last_hour=8)
    big = mailbox("big@tryacme.test", hourly_limit=10, sent_last_hour=0)
    [d] = decide_send(one_message(["m@x.test"], cc=["c@x.test", "e@x.test"]), state(small, big), NOW)
    assert isinstance(d, SendAccepted) and d.payload.mailbox_id == big.id
    [r] = decide_send(one_message(["m@x.test"], cc=["c@x.test", "e@x.test"]), state(small), NOW)
    assert isinstance(r, SendRejected) and r.payload.reason == "mailbox_unavailable"


def test_a_requested_message_read_from_before_lists_has_its_one_address() -> None:
    """Events written when a message had one `to` string still parse."""
    m = RequestedMessage.model_validate(
        {"message_id": str(new_id()), "conv_id": str(new_id()), "to": "m@x.test"}
    )
    assert m.to == ["m@x.test"] and m.counterpart == "m@x.test"
