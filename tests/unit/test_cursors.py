"""Page cursors (services/ingress/cursors.py): what `encode` makes, `decode` gives back; anything else
is a 400 naming the parameter."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest

from services.ingress import cursors
from services.ingress.http import ApiError


def test_a_keyset_comes_back_as_it_went() -> None:
    at, message_id = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC), uuid4()
    assert cursors.decode(cursors.encode(at, message_id), datetime, UUID) == (at, message_id)
    assert cursors.decode(cursors.encode(at, "a|b@x.test"), datetime, str) == (at, "a|b@x.test")
    assert cursors.decode(cursors.encode(2**63 - 1), int) == (2**63 - 1,)


@pytest.mark.parametrize(
    "cursor",
    [
        "not base64!",
        base64.urlsafe_b64encode(b"2026-03-01T12:00:00").decode(),  # one part of two
        base64.urlsafe_b64encode(b"yesterday|" + str(uuid4()).encode()).decode(),
        base64.urlsafe_b64encode(b"2026-03-01T12:00:00|not-a-uuid").decode(),
        base64.urlsafe_b64encode(b"\xff\xfe|x").decode(),
    ],
)
def test_anything_else_is_a_400_naming_the_parameter(cursor: str) -> None:
    with pytest.raises(ApiError) as e:
        cursors.decode(cursor, datetime, UUID, name="page_token")
    assert e.value.status == 400 and e.value.message.startswith("page_token: ")


@pytest.mark.parametrize("seq", [-1, 2**63, 2**64])
def test_a_sequence_number_outside_64_bits_is_refused(seq: int) -> None:
    with pytest.raises(ApiError):
        cursors.decode(base64.urlsafe_b64encode(str(seq).encode()).decode(), int)
