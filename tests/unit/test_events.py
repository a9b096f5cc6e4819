"""Event envelope, parsing, keys and topics."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas import events as module
from schemas import ids, topics
from schemas.events import ALL_EVENTS, EVENT_TYPES, MessageSent, MessageSentPayload, SmtpReply, parse_event
from schemas.ids import new_id


def test_every_event_type_has_one_topic() -> None:
    """Each event travels on exactly one topic, and every topic's events are known types."""
    for event in ALL_EVENTS:
        assert sum(event in t.events for t in topics.ALL_TOPICS) == 1, event
    assert set(EVENT_TYPES) == {e.model_fields["type"].default for e in ALL_EVENTS}


def test_event_round_trip_and_key() -> None:
    """An event survives JSON and is keyed by its message on the messages topic."""
    mid = new_id()
    e = MessageSent(
        org_id=new_id(),
        payload=MessageSentPayload(
            message_id=mid,
            mailbox_id=new_id(),
            rfc_message_id="<a@b>",
            relay="h:25",
            reply=SmtpReply(code=250, message="ok"),
        ),
    )
    back = parse_event(e.model_dump_json())
    assert back == e and back.event_id.version == 7
    assert topics.topic_of(e) is topics.MESSAGES and topics.key_of(e) == str(mid).encode()


def test_malformed_or_unknown_events_do_not_parse() -> None:
    """Garbage and unknown types raise, so the consumer can park them instead of looping."""
    for raw in (b"not json", b'{"type": "Nope"}', b'{"type": "MessageSent", "payload": {}}'):
        with pytest.raises(ValidationError):
            parse_event(raw)


def test_ids_render_and_parse_both_forms() -> None:
    """Prefixed and bare UUID forms are accepted; garbage is not."""
    u = new_id()
    assert ids.parse("conversation", ids.render("conversation", u)) == u
    assert ids.parse("conversation", str(u)) == u
    assert ids.parse("conversation", "conv_nothex") is None


def test_a_record_read_by_two_consumers_of_one_process_is_parsed_once() -> None:
    """The projections' views and archive read the same records: the second gets the event the first
    parsed (events are frozen values); a large event is parsed each time; what is kept stays bounded."""

    def sent(message: str) -> bytes:
        return MessageSent(
            org_id=new_id(), identity_id=new_id(),
            payload=MessageSentPayload(message_id=new_id(), mailbox_id=new_id(), rfc_message_id="<a@b>",
                                       relay="r:25", reply=SmtpReply(code=250, message=message)),
        ).model_dump_json().encode()  # fmt: skip

    data = sent("ok")
    assert parse_event(data) is parse_event(data)
    assert parse_event(data.decode()) == parse_event(data)
    large = sent("x" * module._PARSED_LARGEST)
    assert parse_event(large) is not parse_event(large)
    for _ in range(module._PARSED_MAX + 10):
        parse_event(sent("ok"))
    assert len(module._PARSED) <= module._PARSED_MAX
