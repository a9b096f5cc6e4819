"""The API's answers as typed models (the identities dialect and the shared routes). Attributes are
snake_case, read from the API's camelCase names; a field the server adds later is kept, not refused.
tests/integration/test_client.py checks every model against the server's /openapi.json, field by field,
so the two cannot drift apart."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
        populate_by_name=True,
        extra="allow",
    )


# --- identities and mailboxes --------------------------------------------------------------------------


class Identity(Model):
    id: str
    handle: str
    daily_cap: int
    timezone: str
    require_approval: bool
    created_at: str
    updated_at: str


class IdentityList(Model):
    data: list[Identity]


class SmtpSettingsOut(Model):
    host: str
    port: int
    tls: Literal["none", "starttls", "tls"]
    username: str | None


class ImapSettingsOut(Model):
    host: str
    port: int
    tls: Literal["none", "starttls", "tls"]
    username: str


class SyncState(Model):
    state: Literal["idle", "syncing", "error"]
    error: str | None = None
    last_synced_at: str | None


class WarmupOut(Model):
    start_per_day: int
    increase_per_day: int
    started_at: str


class Mailbox(Model):
    id: str
    identity: str
    email: str
    smtp: SmtpSettingsOut
    hourly_limit: int
    daily_limit: int | None
    warmup: WarmupOut | None = None
    effective_daily_limit: int | None
    health: Literal["healthy", "unhealthy", "paused"]
    imap: ImapSettingsOut | None = None
    sync: SyncState | None = None
    created_at: str
    updated_at: str


class MailboxList(Model):
    data: list[Mailbox]


# --- sending ---------------------------------------------------------------------------------------------


class Account(Model):
    id: str
    email: str


class SendResult(Model):
    """A message decided at once: `accepted` (with its mailbox) or `rejected` (with the reason)."""

    to: str
    id: str | None = None
    status: str
    conv_id: str | None = None
    affinity: Literal["new", "existing", "reassigned"] | None = None
    account: Account | None = None
    reason: str | None = None


class ScheduledResult(Model):
    """A message that waits for its `send_at`."""

    to: str
    message_id: str
    status: str
    conv_id: str
    send_at: str
    reason: Literal["cap_deferred"] | None = None


class PendingResult(Model):
    """A message held in a draft until a person approves it."""

    to: str
    message_id: str
    status: str
    conv_id: str
    draft_id: str


class SendResponse(Model):
    accepted: int
    rejected: int
    scheduled: int = 0
    pending_approval: int = 0
    remaining: int
    daily_cap: int
    identity: str
    messages: list[ScheduledResult | PendingResult | SendResult]


class ConversationMessage(Model):
    id: str | None
    message_id: str
    direction: str
    status: str
    from_: str | None = Field(None, alias="from")  # `from` is a Python keyword
    to: list[str]
    cc: list[str]
    subject: str | None
    text: str | None
    html: str | None
    in_reply_to: str | None
    references: list[str]
    affinity: str | None
    account: Account | None
    reason: str | None
    created_at: str
    sent_at: str | None
    reply_text: str | None = None
    auto_reply: bool = False
    authentication: dict[str, str] | None = None



class Conversation(Model):
    id: str
    identity: str
    counterpart: str | None
    subject: str | None
    account: Account | None
    created_at: str
    updated_at: str
    messages: list[ConversationMessage]


class ConversationList(Model):
    data: list[Conversation]
    next_cursor: str | None
    has_more: bool


class FoundMessage(ConversationMessage):
    conv_id: str | None


class MessageSearch(Model):
    data: list[FoundMessage]


class MessageFile(Model):
    filename: str
    content_type: str
    size: int
    download_url: str  # signed, no key needed, valid 15 minutes


class MessageDetail(FoundMessage):
    identity: str
    attachments: list[MessageFile]
    raw_url: str | None  # signed, valid 15 minutes; None until it was sent


class Cancelled(Model):
    id: str
    status: str


class AuditEvent(Model):
    id: str
    type: str
    occurred_at: str
    event: dict[str, Any]


class AuditTrail(Model):
    data: list[AuditEvent]


class ScheduledSend(Model):
    message_id: str
    identity: str
    to: list[str]
    subject: str
    conv_id: str
    send_at: str


class ScheduledList(Model):
    data: list[ScheduledSend]
    next_cursor: str | None
    has_more: bool


# --- drafts ----------------------------------------------------------------------------------------------


class Draft(Model):
    id: str
    identity: str
    status: Literal["pending", "approved", "rejected", "cancelled"]
    to: list[str]
    subject: str
    text: str | None
    html: str | None
    send_at: str | None
    message_ids: list[str]
    conv_ids: list[str]
    reason: str | None
    created_at: str
    updated_at: str


class DraftList(Model):
    data: list[Draft]
    next_cursor: str | None
    has_more: bool


class ApprovedDraft(SendResponse):
    draft: Draft


# --- the event feed --------------------------------------------------------------------------------------


class FeedEvent(Model):
    cursor: str
    id: str
    type: str
    occurred_at: str
    event: dict[str, Any]

    @property
    def conv_id(self) -> str | None:
        """The conversation the event is about, as the API names it (`conv_...`), if it names one."""
        return _api_id("conv", self.event.get("payload", {}).get("conv_id"))

    @property
    def message_id(self) -> str | None:
        """The message the event is about, as the API names it (`msg_...`), if it names one."""
        return _api_id("msg", self.event.get("payload", {}).get("message_id"))


def _api_id(prefix: str, raw: Any) -> str | None:
    """An event's UUID as the API shows it: `<prefix>_<hex>`."""
    try:
        return f"{prefix}_{uuid.UUID(str(raw)).hex}" if raw else None
    except ValueError:
        return None


class EventPage(Model):
    data: list[FeedEvent]
    next_cursor: str
    has_more: bool


class WaitResult(Model):
    message: FeedEvent | None
    cursor: str


# --- suppressions ----------------------------------------------------------------------------------------


class Suppression(Model):
    address: str
    reason: str
    message_id: str | None
    event_id: str
    cause_event_id: str | None
    created_at: str


class SuppressionList(Model):
    data: list[Suppression]
    next_cursor: str | None
    has_more: bool


# --- webhooks --------------------------------------------------------------------------------------------


class Webhook(Model):
    id: str
    url: str
    events: list[str]
    description: str
    enabled: bool
    disabled_reason: str | None
    created_at: str
    updated_at: str


class WebhookCreated(Webhook):
    secret: str


class WebhookList(Model):
    data: list[Webhook]


class SecretRotated(Model):
    secret: str
    previous_secret_expires_at: str


class DeliveryAttempt(Model):
    attempt: int
    started_at: str
    duration_ms: int
    status_code: int | None
    error: str
    response: str


class Delivery(Model):
    id: str
    webhook_id: str
    type: str
    message_id: str | None
    state: str
    attempt_count: int
    next_attempt_at: str | None
    last_status_code: int | None
    created_at: str
    delivered_at: str | None
    payload: dict[str, Any]
    attempts: list[DeliveryAttempt]


class DeliveryList(Model):
    data: list[Delivery]
    next_cursor: str | None
    has_more: bool
