"""Request validation shared by the dialects."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.api.identities import SendRequest
from services.ingress.http import describe_validation_error


def error_of(**body) -> str:
    with pytest.raises(ValidationError) as info:
        SendRequest.model_validate(body)
    return describe_validation_error(info.value)


def test_reply_and_new_conversation_shapes() -> None:
    """convId alone with a body is a reply; to + subject + body is a new conversation."""
    assert SendRequest.model_validate({"convId": "conv_1", "text": "x"}).recipients() == []
    assert SendRequest.model_validate({"to": "A@Example.TEST", "subject": "s", "html": "h"}).recipients() == [
        "A@example.test"
    ]


@pytest.mark.parametrize(
    "bad", ["a\r\nb", "a\nb", "a\rb", "a\x00b", "a\x0bb", "a\x0cb", "a\x1cb", "a\x7fb", "a\u2028b", "a\tb"]
)
def test_header_breaking_characters_are_refused(bad: str) -> None:
    """Control characters and line separators are refused in header-bound fields; the message names the field."""
    assert error_of(to="a@example.test", subject=bad, text="x").startswith("subject: must not contain")
    assert error_of(to="a@example.test", subject="s", text="x", inReplyTo=bad).startswith("inReplyTo:")
    assert error_of(to="a@example.test", subject="s", text="x", references=["<a@b>", bad]).startswith(
        "references[1]:"
    )


def test_recipient_limit() -> None:
    """At most 100 recipients per request."""
    to = [f"r{i}@example.test" for i in range(101)]
    assert "at most 100" in error_of(to=to, subject="s", text="x")
