"""The reply rules: subject, threading headers, bound mailbox, never rerouted."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas.events import Content, ReplyRequested, ReplyRequestedPayload, SendAccepted, SendRejected
from schemas.ids import new_id
from schemas.replies import reply_subject
from services.decide.affinity import IdentityState, MailboxState
from services.decide.replies import Thread, decide_reply

NOW = datetime(2026, 11, 22, tzinfo=UTC)


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Fleet rotation", "Re: Fleet rotation"),
        ("Re: Fleet", "Re: Fleet"),
        ("RE: x", "RE: x"),
        ("re[2]: x", "re[2]: x"),
        ("AW: x", "AW: x"),
        ("Rebates", "Re: Rebates"),
        ("", "Re: "),
    ],
)
def test_reply_subject_never_doubles_the_prefix(subject: str, expected: str) -> None:
    """`Re: ` is added once; an existing reply prefix (any case, common languages) is kept."""
    assert reply_subject(subject) == expected


def setup(health: str = "healthy", cap: int = 10, used: int = 0):
    bound, other = (
        MailboxState(new_id(), "a@t.test", health, 600, None),
        MailboxState(new_id(), "b@t.test", "healthy", 600, None),
    )
    state = IdentityState(new_id(), "h@x.test", cap, used, (bound, other))
    thread = Thread(
        new_id(), bound.id, "morgan@x.test", "Fleet", "<m2@t.test>", ("<m1@t.test>", "<m2@t.test>")
    )
    req = ReplyRequested(
        org_id=new_id(),
        identity_id=state.identity_id,
        payload=ReplyRequestedPayload(
            handle="h@x.test",
            message_id=new_id(),
            conv_id=thread.conv_id,
            content=Content(text="Friday works."),
        ),
    )
    return state, thread, req, bound


def test_reply_resolves_recipient_subject_headers_and_mailbox() -> None:
    """The reply goes to the counterpart, from the bound mailbox, as `Re:`, threaded on the last message."""
    state, thread, req, bound = setup()
    [d] = decide_reply(req, state, thread, NOW)
    assert isinstance(d, SendAccepted)
    p = d.payload
    assert p.to == ["morgan@x.test"] and p.mailbox_id == bound.id and p.affinity == "existing"
    assert p.content.subject == "Re: Fleet" and p.content.text == "Friday works."
    assert p.content.in_reply_to == "<m2@t.test>" and p.content.references == ["<m1@t.test>", "<m2@t.test>"]
    assert p.remaining == 9


@pytest.mark.parametrize("health", ["paused", "unhealthy"])
def test_reply_is_rejected_not_rerouted_when_its_mailbox_cannot_send(health: str) -> None:
    """Another healthy mailbox exists, yet the reply is rejected: threads keep one sender."""
    state, thread, req, _ = setup(health=health)
    [d] = decide_reply(req, state, thread, NOW)
    assert (
        isinstance(d, SendRejected)
        and d.payload.reason == "mailbox_unavailable"
        and d.payload.to == ["morgan@x.test"]
    )


def test_reply_counts_against_the_daily_cap() -> None:
    """A reply with the cap used up is `cap_exceeded`."""
    state, thread, req, _ = setup(cap=3, used=3)
    [d] = decide_reply(req, state, thread, NOW)
    assert isinstance(d, SendRejected) and d.payload.reason == "cap_exceeded" and d.payload.remaining == 0
