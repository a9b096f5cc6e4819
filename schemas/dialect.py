"""What sendstream needs to know of an API dialect, beyond its own schema and routes modules.

A dialect is a schema module (`schemas/api/<name>.py`, which declares its `DIALECT`), a routes module
(`services/ingress/routes/<name>.py`) and one line in the registry (`schemas/dialects.py`). Code outside
them never names a dialect: it asks the registry for the dialect a message was sent through and reads
what it needs here (tests/unit/test_layout.py checks).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

# Events from before a message recorded its dialect were all of the first one.
ORIGINAL = "identities"


class ErrorShape(Protocol):
    """A dialect's error body: a pydantic model made from the kind of error and its message."""

    @classmethod
    def of(cls, type_: str, message: str) -> BaseModel: ...


@dataclass(frozen=True)
class HourlyBudget:
    """Sends a dialect allows in a rolling hour: its bucket (`{identity_id}` filled in for one per
    inbox or mailbox; none: one for the whole organization), the IngressSettings field with the limit,
    and what the limit counts (as a 429 says it)."""

    bucket: str
    setting: str
    unit: str


# The `data` of a message webhook, from (the event, the message's row in the messages view or {}, the
# facts the event carries in that view's column names, which win; identity handles by id).
WebhookMessage = Callable[[Any, dict[str, Any], dict[str, Any], Mapping[Any, str]], dict[str, Any]]


@dataclass(frozen=True)
class WebhookFormat:
    """A dialect's own webhooks, for the endpoints made through its routes (and its live event stream):
    what each event's body is, and the names of the signature headers (`webhook`: Standard Webhooks'
    `webhook-id`, `-timestamp`, `-signature`; `svix`: the same signature under `svix-id`, ...)."""

    header_prefix: str
    # (the webhook's name, the event, the message as a messages-view row: stored and known facts merged,
    # identity handles by id, its conversation and messages or None) -> the body, or None: not one of
    # this dialect's events.
    body: Callable[[str, Any, dict[str, Any], Mapping[Any, str], Any], dict[str, Any] | None]
    # The webhooks whose body shows the message's conversation (read for them only).
    with_thread: frozenset[str] = frozenset()
    # Webhooks it knows under another name (subscribed to, and shown, by that name).
    renames: Mapping[str, str] = field(default_factory=dict)

    def name_of(self, webhook: str | None) -> str | None:
        return self.renames.get(webhook, webhook) if webhook else None


@dataclass(frozen=True)
class Dialect:
    name: str
    error_body: type[ErrorShape]
    webhook_message: WebhookMessage
    # Whether a send's outcome event (its summary) carries all that webhook_message shows, so the
    # webhooks need not read the message's view.
    outcome_shows_message: bool = False
    # Sends budgeted per rolling hour (besides the identities' daily caps, which decide keeps).
    hourly_budget: HourlyBudget | None = None
    # How its requests name a message's bodies, where not `text` and `html` (error messages name them).
    body_fields: Mapping[str, str] = field(default_factory=dict)
    # Webhooks of its own shape (None: its endpoints are /v1/webhooks', and get SPEC 3.4's bodies).
    webhook_format: WebhookFormat | None = None
