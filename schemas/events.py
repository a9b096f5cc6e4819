"""Every event of the log: past-tense facts, each an Envelope with a typed payload.

Events are serialised as JSON. `parse_event` reads any of them; `EVENT_TYPES` maps `type` to model.
Bodies travel inline while they are small (the ingress bounds them); attachments and raw MIME are
stored once in the blob store (services/common/domain/blobs.py) and referenced by sha256, so events stay well
under Kafka's 1 MB default.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Union
from uuid import UUID, uuid5

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter

from schemas.dialect import ORIGINAL
from schemas.envelope import Envelope
from schemas.status import MailboxHealth
from schemas.warmup import Warmup

Affinity = Literal["new", "existing", "reassigned"]
RejectReason = Literal[
    "cap_exceeded", "suppressed", "mailbox_unavailable", "invalid_recipient", "rate_limited", "unprocessable"
]


class Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")  # a newer producer's fields: schemas/envelope.py


# The API dialect a message came through (schemas/dialects.py); a name this version does not know
# (a newer one's) is kept, and its messages shown as the first dialect shows them.
Dialect = str


class BlobRef(Payload):
    """Bytes kept in the blob store (services/common/domain/blobs.py), as events refer to them: never the bytes."""

    sha256: str = Field(pattern="^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    content_type: str


class Attachment(BlobRef):
    """A file sent with a message: its name and the blob of its bytes."""

    filename: str


class Forwarded(Payload):
    """What a forward carries of the message it forwards (mailboxes dialect). Inline, its body and
    files are already in the content; wrapped, `original` is its raw MIME, sent as one message/rfc822
    part."""

    message_id: UUID
    rfc_message_id: str | None = None
    mode: Literal["inline", "wrapped"] = "inline"
    original: BlobRef | None = None


class Content(Payload):
    """What the sender wrote; shared by requests and the accepted send. A body too large to travel in
    events is in the blob store (`text_blob`, `html_blob`; then `text`, `html` are None): consumers that
    need it read it back (services/common/domain/bodies.py)."""

    subject: str = ""
    text: str | None = None
    html: str | None = None
    text_blob: BlobRef | None = None
    html_blob: BlobRef | None = None
    cc: list[str] = Field(default_factory=list)
    bcc: list[str] = Field(default_factory=list)
    in_reply_to: str | None = None
    references: list[str] = Field(default_factory=list)
    labels: list[str] = Field(default_factory=list)  # the sender's own tags (inboxes dialect); never sent
    attachments: list[Attachment] = Field(default_factory=list)
    unsubscribe: bool = False  # carry one-click List-Unsubscribe (RFC 8058)
    reply_to: str | None = None  # the Reply-To header: where replies should go, if not to the sender
    forwarded: Forwarded | None = None  # set on a forward: it is sent with X-Forwarded-Message-Id
    # The API dialect the request came through: its webhooks show the message as that dialect does.
    dialect: Dialect = ORIGINAL

    @property
    def offloaded(self) -> bool:
        return self.text_blob is not None or self.html_blob is not None


def _listed(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class RequestedMessage(Payload):
    """One message of a request, to its `To` addresses (the first is its counterpart: the conversation's
    and affinity's key), in (for a new send) its own conversation. The request's Cc and Bcc go with
    every message of it (`Content`): only one-message requests have them."""

    message_id: UUID
    conv_id: UUID
    to: Annotated[
        list[str], BeforeValidator(_listed), Field(min_length=1)
    ]  # one address: events before lists

    @property
    def counterpart(self) -> str:
        return self.to[0]


def recipient_count(to: list[str], content: Content) -> int:
    """What a message counts against caps and limits: every recipient, Cc and Bcc included."""
    return len(to) + len(content.cc) + len(content.bcc)


# --- requests (topic: requests, key: identity_id) ---------------------------------------------------


class Origin(Payload):
    """Who asked, over the API: the key used, and a fingerprint of the request (sha256 of its method,
    path and canonical JSON body) that shows the request the client sent is the one recorded."""

    api_key_id: UUID
    request_sha256: str


# What stops a scheduled message into a conversation (SPEC 3.5): a reply from its counterpart (not an
# auto-reply), or any mail arriving in it.
StopOnReply = Literal["reply", "any"]
# What a send the daily cap would refuse becomes: refused, or scheduled for the cap's next window.
OnCapExceeded = Literal["reject", "defer"]
# Why a message waits: its sender asked for a time, or the daily cap deferred it.
ScheduledReason = Literal["requested", "cap_deferred"]


class TimedPayload(Payload):
    """When a request is to be decided (SPEC 3.5): at once, or (`send_at`) decided as `scheduled` now and
    decided as a send when its timer publishes it again, `fired`, at `send_at` (one message, under
    uuid5(message_id, "fire <send_at>")); `unless_replied`: cancelled instead if mail arrives in its
    conversation first; `on_cap_exceeded`: what a recipient the daily cap would refuse becomes."""

    send_at: datetime | None = None
    fired: bool = False
    unless_replied: StopOnReply | None = None
    on_cap_exceeded: OnCapExceeded = "reject"


def firing_id(message_id: UUID, send_at: datetime) -> UUID:
    """The event id of a scheduled message's firing at `send_at`: a timer published twice is one event, and
    a message deferred again fires anew."""
    return uuid5(message_id, f"fire {send_at.astimezone(UTC).isoformat()}")


class SendRequestedPayload(TimedPayload):
    handle: str
    messages: list[RequestedMessage]
    content: Content
    origin: Origin | None = None

    @property
    def message_ids(self) -> list[UUID]:
        return [m.message_id for m in self.messages]

    def firing(self, message_id: UUID) -> SendRequestedPayload:
        """The request of one of its messages as its timer publishes it at `send_at`."""
        return self.model_copy(update={"messages": [m for m in self.messages if m.message_id == message_id],
                                       "fired": True})  # fmt: skip


class ReplyRequestedPayload(TimedPayload):
    """A reply in a conversation: to its counterpart, under `Re:` and its subject; or, with `to`, to
    those addresses (and the content's Cc and Bcc) under the content's own subject if it has one."""

    handle: str
    message_id: UUID
    conv_id: UUID
    content: Content
    to: list[str] | None = None
    origin: Origin | None = None
    answering: str | None = None  # the Message-ID it answers (None: the conversation's latest message)

    def firing(self, message_id: UUID) -> ReplyRequestedPayload:
        """The request as its timer publishes it at `send_at` (a reply is one message)."""
        return self.model_copy(update={"fired": True})

    @property
    def message_ids(self) -> list[UUID]:
        return [self.message_id]


class SendRequested(Envelope):
    type: Literal["SendRequested"] = "SendRequested"
    payload: SendRequestedPayload


class CancelRequestedPayload(Payload):
    """Cancel a scheduled send before it fires. Decided on the identity's partition, in one order with
    the send's firing: whichever comes first wins, and the answer says which."""

    message_id: UUID


class CancelRequested(Envelope):
    type: Literal["CancelRequested"] = "CancelRequested"
    payload: CancelRequestedPayload


class ReplyRequested(Envelope):
    type: Literal["ReplyRequested"] = "ReplyRequested"
    payload: ReplyRequestedPayload


Timed = SendRequested | ReplyRequested  # the requests that may wait for their time (SPEC 3.5)


# --- decisions (topic: decisions, key: mailbox_id when assigned, else identity_id) -----------------


class SendAcceptedPayload(Payload):
    """Everything dispatch needs to build and send the message, except the relay's secrets."""

    message_id: UUID
    conv_id: UUID
    mailbox_id: UUID
    mailbox_email: str
    affinity: Affinity
    rfc_message_id: str
    from_addr: str
    to: list[str]
    content: Content
    daily_cap: int
    remaining: int


class SendRejectedPayload(Payload):
    message_id: UUID
    conv_id: UUID | None
    to: list[str]
    reason: RejectReason
    detail: str = ""
    daily_cap: int
    remaining: int


class SendAccepted(Envelope):
    type: Literal["SendAccepted"] = "SendAccepted"
    payload: SendAcceptedPayload


class DispatchRetryDuePayload(Payload):
    """A deferred send's next attempt has come due (published by the scheduler from a durable timer)."""

    message_id: UUID
    mailbox_id: UUID
    attempt: int
    first_attempt_at: datetime
    accepted: SendAcceptedPayload


class DispatchRetryDue(Envelope):
    type: Literal["DispatchRetryDue"] = "DispatchRetryDue"
    payload: DispatchRetryDuePayload


class SendRejected(Envelope):
    type: Literal["SendRejected"] = "SendRejected"
    payload: SendRejectedPayload


class SendScheduledPayload(Payload):
    """A message of a scheduled send, waiting for `send_at`; everything else is decided when it fires."""

    message_id: UUID
    conv_id: UUID
    to: list[str]
    send_at: datetime
    daily_cap: int  # the identity's cap and what was left of it when it was scheduled (nothing is spent)
    remaining: int
    unless_replied: StopOnReply | None = None
    reason: ScheduledReason = "requested"


class SendScheduled(Envelope):
    type: Literal["SendScheduled"] = "SendScheduled"
    payload: SendScheduledPayload


class SendCancelledPayload(Payload):
    message_id: UUID
    conv_id: UUID | None = None
    reason: Literal["requested", "replied"] = "requested"


class SendCancelled(Envelope):
    type: Literal["SendCancelled"] = "SendCancelled"
    payload: SendCancelledPayload


# --- message lifecycle (topic: messages, key: message_id) ------------------------------------------


class SmtpReply(Payload):
    code: int
    message: str


class MessageSummary(Payload):
    """Who and what an outbound message is, carried on its outcome so consumers need no lookup."""

    conv_id: UUID
    from_addr: str
    to: list[str]
    subject: str
    mailbox_email: str
    dialect: Dialect = ORIGINAL
    forwarded: bool = False  # a forward: its webhook is message.forwarded


class MessageSentPayload(Payload):
    message_id: UUID
    mailbox_id: UUID
    rfc_message_id: str
    relay: str
    reply: SmtpReply
    attempt: int = 1
    summary: MessageSummary | None = None
    raw: BlobRef | None = Field(
        None, description="The message exactly as the relay took it (message/rfc822)."
    )
    delivered_to: list[UUID] = Field(
        default_factory=list, description="Hosted identities it was delivered to without a relay."
    )


class DispatchDeferredPayload(Payload):
    message_id: UUID
    mailbox_id: UUID
    attempt: int
    next_attempt_at: datetime
    reason: str
    reply: SmtpReply | None = None


class MessageFailedPayload(Payload):
    message_id: UUID
    mailbox_id: UUID | None = None
    reason: str
    reply: SmtpReply | None = None
    attempt: int = 1
    summary: MessageSummary | None = None


AuthResult = Literal["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror", "policy"]


class Authentication(Payload):
    """How the receiving server judged the sender (RFC 8601 results); `none` where it could not."""

    spf: AuthResult = "none"
    dkim: AuthResult = "none"
    dmarc: AuthResult = "none"


class ArrivedMessage(Payload):
    """A message as it arrived for one identity: what the inbound service read from its raw form."""

    message_id: UUID
    rfc_message_id: str
    from_addr: str
    to: list[str]  # its To addresses (Cc in the content)
    recipients: list[str] = Field(description="The envelope recipients it was delivered to here.")
    content: Content  # subject, bodies, Cc, In-Reply-To, References, attachments
    raw: BlobRef
    auto_reply: bool = False
    reply_text: str | None = None  # its text without quoted history and signature
    authentication: Authentication = Field(default_factory=Authentication)
    from_identity_id: UUID | None = None  # mail from one of ours, delivered without a relay


class MessageArrivedPayload(Payload):
    """Mail accepted for an identity (its handle, or an address of its pool: `mailbox_id`), kept, not yet
    threaded. `conv_id` is the conversation it replies to when its references name one of the
    identity's messages, else the id of the new conversation it starts."""

    message: ArrivedMessage
    conv_id: UUID
    mailbox_id: UUID | None = None


class MessageArrived(Envelope):
    type: Literal["MessageArrived"] = "MessageArrived"
    payload: MessageArrivedPayload


class MessageReceivedPayload(Payload):
    """An arrived message threaded into its conversation, bound to the conversation's mailbox."""

    message_id: UUID
    conv_id: UUID
    mailbox_id: UUID | None
    mailbox_email: str | None = None
    new_conversation: bool
    message: ArrivedMessage


class RecipientStatus(Payload):
    message_id: UUID
    recipient: str
    status: str = Field(description="RFC 3463 enhanced status code, e.g. 5.1.1")
    diagnostic: str = ""


class MessageFlagsChangedPayload(Payload):
    message_id: UUID
    is_read: bool | None = None
    is_starred: bool | None = None
    labels: list[str] | None = None  # the message's own labels, as they now are


class MessageDeletedPayload(Payload):
    message_id: UUID


class MessageSent(Envelope):
    type: Literal["MessageSent"] = "MessageSent"
    payload: MessageSentPayload


class DispatchDeferred(Envelope):
    type: Literal["DispatchDeferred"] = "DispatchDeferred"
    payload: DispatchDeferredPayload


class MessageFailed(Envelope):
    type: Literal["MessageFailed"] = "MessageFailed"
    payload: MessageFailedPayload


class MessageReceived(Envelope):
    type: Literal["MessageReceived"] = "MessageReceived"
    payload: MessageReceivedPayload


class MessageDelivered(Envelope):
    type: Literal["MessageDelivered"] = "MessageDelivered"
    payload: RecipientStatus


class MessageBounced(Envelope):
    type: Literal["MessageBounced"] = "MessageBounced"
    payload: RecipientStatus


class MessageComplained(Envelope):
    type: Literal["MessageComplained"] = "MessageComplained"
    payload: RecipientStatus


class MessageFlagsChanged(Envelope):
    type: Literal["MessageFlagsChanged"] = "MessageFlagsChanged"
    payload: MessageFlagsChangedPayload


class MessageDeleted(Envelope):
    type: Literal["MessageDeleted"] = "MessageDeleted"
    payload: MessageDeletedPayload


# --- suppressions and webhooks ---------------------------------------------------------------------


SuppressionReason = Literal["hard_bounce", "complaint", "unsubscribe", "manual"]


class SuppressionAddedPayload(Payload):
    """An address of the organization's that must not be mailed any more; its cause is the event this
    one was caused by (causation_id: the bounce, the complaint...) and the message it was about."""

    address: str  # lower-cased
    reason: SuppressionReason
    message_id: UUID | None = None


class SuppressionRemovedPayload(Payload):
    address: str


class SuppressionAdded(Envelope):
    type: Literal["SuppressionAdded"] = "SuppressionAdded"
    payload: SuppressionAddedPayload


class SuppressionRemoved(Envelope):
    type: Literal["SuppressionRemoved"] = "SuppressionRemoved"
    payload: SuppressionRemovedPayload


class WebhookAttemptPayload(Payload):
    """One attempt at delivering one webhook to one endpoint."""

    endpoint_id: UUID
    delivery_id: UUID
    message_id: UUID | None = Field(None, description="The message the webhook is about, if any.")
    event_type: str
    attempt: int
    status_code: int | None
    duration_ms: int
    error: str = ""
    next_attempt_at: datetime | None = Field(None, description="When it is tried again; None: it is not.")


class WebhookEndpointDisabledPayload(Payload):
    endpoint_id: UUID
    url: str
    reason: str


class WebhookDelivered(Envelope):
    type: Literal["WebhookDelivered"] = "WebhookDelivered"
    payload: WebhookAttemptPayload


class WebhookFailed(Envelope):
    type: Literal["WebhookFailed"] = "WebhookFailed"
    payload: WebhookAttemptPayload


class WebhookEndpointDisabled(Envelope):
    type: Literal["WebhookEndpointDisabled"] = "WebhookEndpointDisabled"
    payload: WebhookEndpointDisabledPayload


# --- admin facts (topic: admin, key: org_id) -------------------------------------------------------


class IdentityPayload(Payload):
    identity_id: UUID
    handle: str
    daily_cap: int
    timezone: str
    require_approval: bool = False


class MailboxPayload(Payload):
    mailbox_id: UUID
    email: str
    hourly_limit: int
    daily_limit: int | None
    health: MailboxHealth
    warmup: Warmup | None = None


class MailboxHealthPayload(Payload):
    mailbox_id: UUID
    health: MailboxHealth
    previous: MailboxHealth


class EntityRemovedPayload(Payload):
    id: UUID


class IdentityCreated(Envelope):
    type: Literal["IdentityCreated"] = "IdentityCreated"
    payload: IdentityPayload


class IdentityUpdated(Envelope):
    type: Literal["IdentityUpdated"] = "IdentityUpdated"
    payload: IdentityPayload


class IdentityDeleted(Envelope):
    type: Literal["IdentityDeleted"] = "IdentityDeleted"
    payload: EntityRemovedPayload


class MailboxAdded(Envelope):
    type: Literal["MailboxAdded"] = "MailboxAdded"
    payload: MailboxPayload


class MailboxUpdated(Envelope):
    type: Literal["MailboxUpdated"] = "MailboxUpdated"
    payload: MailboxPayload


class MailboxHealthChanged(Envelope):
    type: Literal["MailboxHealthChanged"] = "MailboxHealthChanged"
    payload: MailboxHealthPayload


class MailboxRemoved(Envelope):
    type: Literal["MailboxRemoved"] = "MailboxRemoved"
    payload: EntityRemovedPayload


# --- mailbox sync facts (topic: mailsync, key: mailbox_id) -----------------------------------------


class MailboxSyncPayload(Payload):
    mailbox_id: UUID
    imap: bool  # the mailbox has an IMAP account to read its mail back from (False: no longer)


class MailboxSyncChanged(Envelope):
    """A mailbox's IMAP account was set, changed or removed (or the mailbox was): the sync worker that
    owns the mailbox's partition (re)starts or stops its session."""

    type: Literal["MailboxSyncChanged"] = "MailboxSyncChanged"
    payload: MailboxSyncPayload


# --- drafts (topic: admin, key: org_id): sends held for a person's approval (SPEC 3.5) ------------------


class DraftPayload(Payload):
    """A draft as it now is: `request`, the *Requested event its approval publishes (its ids fixed when the
    draft was made, so approving it twice publishes one event); `by`, the API key that acted."""

    draft_id: UUID
    status: Literal["pending", "approved", "rejected", "cancelled"]
    message_ids: list[UUID]
    request: dict[str, Any] | None = None  # in DraftCreated and DraftUpdated
    reason: str | None = None  # a rejection's
    by: UUID | None = None


class DraftCreated(Envelope):
    type: Literal["DraftCreated"] = "DraftCreated"
    payload: DraftPayload


class DraftUpdated(Envelope):
    type: Literal["DraftUpdated"] = "DraftUpdated"
    payload: DraftPayload


class DraftApproved(Envelope):
    type: Literal["DraftApproved"] = "DraftApproved"
    payload: DraftPayload


class DraftRejected(Envelope):
    type: Literal["DraftRejected"] = "DraftRejected"
    payload: DraftPayload


class DraftCancelled(Envelope):
    """A draft's messages cancelled (`POST /v1/messages/{id}/cancel`) before anyone approved it."""

    type: Literal["DraftCancelled"] = "DraftCancelled"
    payload: DraftPayload


ALL_EVENTS: tuple[type[Envelope], ...] = (
    SendRequested, ReplyRequested, MessageArrived, CancelRequested,
    SendAccepted, SendRejected, DispatchRetryDue, SendScheduled, SendCancelled,
    MessageSent, DispatchDeferred, MessageFailed, MessageReceived, MessageDelivered, MessageBounced,
    MessageComplained, MessageFlagsChanged, MessageDeleted,
    SuppressionAdded, SuppressionRemoved, WebhookDelivered, WebhookFailed, WebhookEndpointDisabled,
    IdentityCreated, IdentityUpdated, IdentityDeleted,
    MailboxAdded, MailboxUpdated, MailboxHealthChanged, MailboxRemoved, MailboxSyncChanged,
    DraftCreated, DraftUpdated, DraftApproved, DraftRejected, DraftCancelled,
)  # fmt: skip
EVENT_TYPES: dict[str, type[Envelope]] = {e.model_fields["type"].default: e for e in ALL_EVENTS}

AnyEvent = Annotated[Union[ALL_EVENTS], Field(discriminator="type")]  # noqa: UP007 - built from the tuple
_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)


# The events parsed last, by their JSON: consumer groups hosted by one process (the projections' views
# and archive) read the same records moments apart, and each record is parsed once. Events are frozen
# values nothing changes, so one object serves both. Bounded: large events are not kept.
_PARSED: dict[bytes | str, Envelope] = {}
_PARSED_MAX, _PARSED_LARGEST = 1024, 64 * 1024


def parse_event(data: bytes | str) -> Envelope:
    """Parse one serialised event; raises pydantic.ValidationError on anything malformed or unknown."""
    if len(data) > _PARSED_LARGEST:
        return _ADAPTER.validate_json(data)
    if (event := _PARSED.get(data)) is None:
        event = _PARSED[data] = _ADAPTER.validate_json(data)
        if len(_PARSED) > _PARSED_MAX:
            del _PARSED[next(iter(_PARSED))]
    return event


def event_from(data: dict[str, Any]) -> Envelope:
    """An event from its JSON form already decoded (a jsonb column read back), without serialising it again."""
    return _ADAPTER.validate_python(data)


def message_id_of(event: Envelope) -> UUID | None:
    """The message an event is about, when it is about exactly one."""
    return getattr(event.payload, "message_id", None)


def messages_of(event: Envelope) -> list[UUID]:
    """Every message an event is about: whose audit trail shows it (projections/archive.py)."""
    if isinstance(event, SendRequested):
        return [m.message_id for m in event.payload.messages]
    if isinstance(event, MessageArrived):
        return [event.payload.message.message_id]
    return [m] if (m := message_id_of(event)) else []
