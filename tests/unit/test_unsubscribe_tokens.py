"""One-click unsubscribe tokens name the message and the recipient (services/common/domain/unsubscribe.py)."""

from __future__ import annotations

import uuid

from services.common.domain import unsubscribe

KEY = b"k" * 32


def test_a_token_names_its_message_and_recipient_and_shows_no_address() -> None:
    message_id = uuid.uuid4()
    a, b = (
        unsubscribe.token_for(KEY, message_id, "Ana@Example.test"),
        unsubscribe.token_for(KEY, message_id, "bo@example.test"),
    )
    assert a != b and "example" not in a and 40 <= len(a) <= 64  # the mailto form takes it
    found_a, found_b = unsubscribe.opened(KEY, a), unsubscribe.opened(KEY, b)
    assert found_a is not None and found_b is not None
    assert found_a[0] == found_b[0] == message_id and found_a[1] != found_b[1]
    assert (
        unsubscribe.opened(KEY, a)[1]
        == unsubscribe.opened(KEY, unsubscribe.token_for(KEY, message_id, "ana@example.test"))[1]
    )
    assert unsubscribe.opened(KEY, unsubscribe.token_for(KEY, message_id)) == (message_id, None)  # of before
    assert unsubscribe.opened(b"x" * 32, a) is None
    assert unsubscribe.opened(KEY, a[:-2] + ("AA" if not a.endswith("AA") else "BB")) is None
