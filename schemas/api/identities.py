"""Wire format of the identities dialect (seeds/identities-api-inboxbase.txt) and our admin routes."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, TypeAdapter, WithJsonSchema, model_validator

from schemas import ids
from schemas.api.common import (
    ApiModel,
    EmailAddress,
    ErrorBody,
    HeaderText,
    Later,
    MessageIdText,
    SmtpSettings,
    Subject,
    TimeZone,
    TlsMode,
    iso,
)
from schemas.commands import Outcome
from schemas.dialect import ORIGINAL, Dialect
from schemas.limits import DEFAULT_DAILY_CAP, DEFAULT_HOURLY_LIMIT, MAX_RECIPIENTS
from schemas.status import MailboxHealth, MessageStatus
from schemas.warmup import Warmup

# --- organizations and keys ------------------------------------------------------------------------


class CreateOrganization(ApiModel):
    name: str = Field(min_length=1, max_length=200)


class OrganizationCreated(BaseModel):
    id: str
    name: str
    apiKey: str


class Organization(BaseModel):
    id: str
    name: str
    unsubscribeByDefault: bool = Field(
        description="Sends carry one-click List-Unsubscribe unless a request sets `unsubscribe: false`."
    )


class UpdateOrganization(ApiModel):
    unsubscribeByDefault: bool


Scope = Literal["send", "read", "admin", "approve"]


class CreateApiKey(ApiModel):
    scopes: list[Scope] = Field(min_length=1)


class ApiKeyCreated(BaseModel):
    id: str
    apiKey: str
    scopes: list[Scope]


# --- identities and mailboxes ----------------------------------------------------------------------


class CreateIdentity(ApiModel):
    handle: EmailAddress
    dailyCap: int = Field(DEFAULT_DAILY_CAP, ge=0, le=1_000_000)
    timezone: TimeZone = "UTC"


_REQUIRE_APPROVAL = (
    "Hold every send of every dialect as a draft until an admin key or one with the `approve` scope "
    "approves it (SPEC 3.5)."
)


class UpdateIdentity(ApiModel):
    dailyCap: int | None = Field(None, ge=0, le=1_000_000)
    timezone: TimeZone | None = None
    requireApproval: bool | None = Field(None, description=_REQUIRE_APPROVAL)


class Identity(BaseModel):
    id: str
    handle: str
    dailyCap: int
    timezone: str
    requireApproval: bool = Field(description=_REQUIRE_APPROVAL)
    createdAt: str
    updatedAt: str


class IdentityList(BaseModel):
    data: list[Identity]


class SmtpSettingsUpdate(ApiModel):
    host: HeaderText | None = Field(None, min_length=1, max_length=255)
    port: int | None = Field(None, ge=1, le=65535)
    tls: TlsMode | None = None
    username: HeaderText | None = None
    password: str | None = None


class SmtpSettingsOut(BaseModel):
    """The relay as the API shows it: never the password."""

    host: str
    port: int
    tls: TlsMode
    username: str | None


class ImapSettings(ApiModel):
    """Where the mailbox's own mail (replies, bounces, out-of-office answers) lands at its provider: the
    sync service reads it back into the mailbox's conversations."""

    host: HeaderText = Field(min_length=1, max_length=255)
    port: int = Field(993, ge=1, le=65535)
    tls: TlsMode = "tls"
    username: HeaderText = Field(min_length=1, max_length=255)
    password: str = Field(min_length=1, max_length=1024)


class ImapSettingsOut(BaseModel):
    """The IMAP account as the API shows it: never the password."""

    host: str
    port: int
    tls: TlsMode
    username: str


class SyncState(BaseModel):
    state: Literal["idle", "syncing", "error"]
    error: str | None = Field(None, description="The server's answer when the last attempt failed.")
    lastSyncedAt: str | None


class WarmupSettings(ApiModel):
    """A warm-up ramp (SPEC 3.5): the mailbox's effective daily limit is
    `min(dailyLimit, startPerDay + increasePerDay x whole days since startedAt)`."""

    startPerDay: int = Field(ge=0, le=10_000_000)
    increasePerDay: int = Field(0, ge=0, le=10_000_000)
    startedAt: str | None = Field(
        None, max_length=64,
        description="When the ramp began (RFC 3339, not in the future; default: now). A mailbox warmed up "
        "elsewhere for a week starts a week back.",
    )  # fmt: skip

    def warmup(self, now: datetime) -> Warmup:
        """The ramp; ValueError naming the field."""
        started = now
        if self.startedAt is not None:
            try:
                started = datetime.fromisoformat(self.startedAt.replace("z", "Z"))
            except ValueError:
                raise ValueError("warmup.startedAt: is not an RFC 3339 date-time") from None
            if started.tzinfo is None:
                raise ValueError("warmup.startedAt: needs an offset (e.g. Z)")
            if started > now:
                raise ValueError("warmup.startedAt: is in the future")
        return Warmup(start_per_day=self.startPerDay, increase_per_day=self.increasePerDay, started_at=started)


class WarmupOut(BaseModel):
    startPerDay: int
    increasePerDay: int
    startedAt: str


class CreateMailbox(ApiModel):
    email: EmailAddress
    smtp: SmtpSettings
    imap: ImapSettings | None = None
    hourlyLimit: int = Field(DEFAULT_HOURLY_LIMIT, ge=0, le=1_000_000)
    dailyLimit: int | None = Field(None, ge=0, le=10_000_000)
    warmup: WarmupSettings | None = None


class UpdateMailbox(ApiModel):
    health: MailboxHealth | None = None
    hourlyLimit: int | None = Field(None, ge=0, le=1_000_000)
    dailyLimit: int | None = Field(None, ge=0, le=10_000_000)
    smtp: SmtpSettingsUpdate | None = None
    imap: ImapSettings | None = Field(None, description="Replaces the IMAP account; `null` removes it.")
    warmup: WarmupSettings | None = Field(None, description="Replaces the warm-up ramp; `null` ends it.")


class Mailbox(BaseModel):
    id: str
    identity: str
    email: str
    smtp: SmtpSettingsOut
    hourlyLimit: int
    dailyLimit: int | None
    warmup: WarmupOut | None = None
    effectiveDailyLimit: int | None = Field(
        description="What it may send today: `dailyLimit`, held down by the warm-up ramp (null: no limit)."
    )
    health: MailboxHealth
    imap: ImapSettingsOut | None = None
    sync: SyncState | None = Field(None, description="The IMAP sync, when the mailbox has an IMAP account.")
    createdAt: str
    updatedAt: str


class MailboxList(BaseModel):
    data: list[Mailbox]


# --- send ------------------------------------------------------------------------------------------


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _recipients_schema() -> dict[str, Any]:
    one = TypeAdapter(EmailAddress).json_schema()
    return {
        "description": "One address, or an array of them: each its own message and conversation.",
        "anyOf": [one, {"type": "array", "items": one, "minItems": 1, "maxItems": MAX_RECIPIENTS}],
    }


Recipients = Annotated[
    list[EmailAddress], BeforeValidator(_one_or_many), WithJsonSchema(_recipients_schema())
]


class SendRequest(Later):
    """A new conversation (`to`, `subject`, body) or a reply (`convId`, body)."""

    to: Recipients | None = None
    subject: Subject | None = None
    text: str | None = None
    html: str | None = None
    inReplyTo: MessageIdText | None = None
    references: list[MessageIdText] | None = Field(None, max_length=100)
    convId: str | None = None
    unsubscribe: bool | None = Field(
        None,
        description="Carry one-click List-Unsubscribe (RFC 8058): following it suppresses the recipient. "
        "Unset: the organization's `unsubscribeByDefault`.",
    )

    @model_validator(mode="after")
    def _shape(self) -> SendRequest:
        if self.convId is not None:
            if self.to is not None or self.subject is not None:
                raise ValueError("convId is mutually exclusive with to and subject")
        else:
            if self.to is None or self.to == []:
                raise ValueError("to is required for a new conversation (or pass convId to reply)")
            if self.subject is None:
                raise ValueError("subject is required for a new conversation")
        if self.text is None and self.html is None:
            raise ValueError("text or html is required")
        recipients = self.recipients()
        if len(recipients) > MAX_RECIPIENTS:
            raise ValueError(f"to accepts at most {MAX_RECIPIENTS} recipients")
        lowered = [r.lower() for r in recipients]
        dupes = sorted({r for r in lowered if lowered.count(r) > 1})
        if dupes:
            raise ValueError(f"to lists {dupes[0]} more than once")
        return self

    def recipients(self) -> list[str]:
        return list(self.to or [])


class Account(BaseModel):
    id: str
    email: str


class ScheduledResult(BaseModel):
    """A recipient's message scheduled for later (SPEC 3.5): nothing is decided until it fires."""

    to: str
    messageId: str = Field(description="Ours (`msg_…`): what it is cancelled by.")
    status: Literal["scheduled"]
    convId: str
    sendAt: str = Field(description="When it fires (UTC).")
    reason: Literal["cap_deferred"] | None = Field(
        None, description="`cap_deferred`: the daily cap had no room (`onCapExceeded: defer`); else asked for."
    )


class SendResult(BaseModel):
    to: str
    id: str | None = Field(None, description="The RFC 5322 Message-ID, once a mailbox is assigned.")
    status: Literal["accepted", "queued", "rejected"]
    convId: str | None = None
    affinity: Literal["new", "existing", "reassigned"] | None = None
    account: Account | None = None
    reason: str | None = None


class PendingResult(BaseModel):
    """A recipient's message held in a draft until a person approves it (`requireApproval`, SPEC 3.5)."""

    to: str
    messageId: str = Field(description="Ours (`msg_…`): what it is cancelled by.")
    status: Literal["pending_approval"]
    convId: str
    draftId: str = Field(description="`drf_…`: what `POST /v1/drafts/{id}/approve` approves.")


class SendResponse(BaseModel):
    accepted: int
    rejected: int
    scheduled: int = 0
    pendingApproval: int = 0
    remaining: int
    dailyCap: int
    identity: str
    messages: list[SendResult | ScheduledResult | PendingResult]


def send_response(outcome: Outcome, handle: str) -> tuple[SendResponse, int]:
    """The seed's answer to a send: each recipient's outcome; 202 if anything was accepted (or is still
    queued), 429 if every recipient was rejected."""
    results: list[SendResult | ScheduledResult | PendingResult] = []
    for m in outcome.messages:
        if m.state == "accepted":
            account = Account(id=ids.render("mailbox", m.mailbox_id), email=m.mailbox_email)
            results.append(
                SendResult(
                    to=m.to[0], id=m.rfc_message_id, status="accepted", convId=ids.render("conversation", m.conv_id),
                    affinity=m.affinity, account=account,
                )
            )  # fmt: skip
        elif m.state == "rejected":
            results.append(SendResult(to=m.to[0], status="rejected", reason=m.reason))
        elif m.state == "scheduled":
            results.append(
                ScheduledResult(
                    to=m.to[0], messageId=ids.render("message", m.message_id), status="scheduled",
                    convId=ids.render("conversation", m.conv_id), sendAt=iso(m.send_at), reason=m.reason,
                )
            )  # fmt: skip
        elif m.state == "pending_approval":
            results.append(
                PendingResult(
                    to=m.to[0], messageId=ids.render("message", m.message_id), status="pending_approval",
                    convId=ids.render("conversation", m.conv_id), draftId=ids.render("draft", m.draft_id),
                )
            )  # fmt: skip
        else:
            results.append(
                SendResult(to=m.to[0], status="queued", convId=ids.render("conversation", m.conv_id))
            )
    response = SendResponse(
        accepted=len(results) - outcome.rejected - outcome.scheduled - outcome.pending,
        rejected=outcome.rejected,
        scheduled=outcome.scheduled,
        pendingApproval=outcome.pending,
        remaining=outcome.remaining,
        dailyCap=outcome.daily_cap,
        identity=handle,
        messages=results,
    )
    return response, 202 if outcome.rejected < len(results) else 429


# --- conversations ---------------------------------------------------------------------------------


class ConversationMessage(BaseModel):
    id: str | None = Field(description="The RFC 5322 Message-ID.")
    messageId: str
    direction: Literal["outbound", "inbound"]
    status: MessageStatus
    from_: str | None = Field(alias="from")
    to: list[str]
    cc: list[str]
    subject: str | None
    text: str | None
    html: str | None
    inReplyTo: str | None
    references: list[str]
    affinity: str | None
    account: Account | None
    reason: str | None
    createdAt: str
    sentAt: str | None
    replyText: str | None = Field(
        None, description="Received mail: its text without quoted history and signature."
    )
    autoReply: bool = Field(False, description="Received mail: an out-of-office or other automatic reply.")
    authentication: dict[str, str] | None = Field(
        None,
        description="Received mail: SPF, DKIM and DMARC as our server judged them (`none` where it could not).",
    )


class Conversation(BaseModel):
    id: str
    identity: str
    counterpart: str | None
    subject: str | None
    account: Account | None
    createdAt: str
    updatedAt: str
    messages: list[ConversationMessage]


class ConversationList(BaseModel):
    """Most recently active first."""

    data: list[Conversation]
    nextCursor: str | None
    hasMore: bool


class FoundMessage(ConversationMessage):
    convId: str | None


class MessageSearch(BaseModel):
    """Best match first."""

    data: list[FoundMessage]


class MessageFile(BaseModel):
    filename: str
    contentType: str
    size: int
    downloadUrl: str = Field(description="A signed link to the file (no API key), valid 15 minutes.")


class MessageDetail(FoundMessage):
    identity: str
    attachments: list[MessageFile]
    rawUrl: str | None = Field(
        description="A signed link to the message as sent or received (RFC 5322), valid 15 minutes; null "
        "while it has not been sent."
    )


def account_out(mailbox_id: Any, email: str | None) -> Account | None:
    return Account(id=ids.render("mailbox", mailbox_id), email=email) if mailbox_id and email else None


def conversation_message_out(r: Any) -> ConversationMessage:
    """A message of the messages view (services/common/domain/views.py) as this dialect shows it."""
    return ConversationMessage.model_validate(
        {
            "id": r["rfc_message_id"], "messageId": ids.render("message", r["id"]), "direction": r["direction"],
            "status": r["status"], "from": r["from_addr"], "to": r["to_addrs"], "cc": r["cc_addrs"],
            "subject": r["subject"], "text": r["text_body"], "html": r["html_body"], "inReplyTo": r["in_reply_to"],
            "references": r["refs"], "affinity": r["affinity"], "account": account_out(r["mailbox_id"], r["mailbox_email"]),
            "reason": r["reason"], "createdAt": iso(r["created_at"]), "sentAt": iso(r["sent_at"]),
            "replyText": r["reply_text"], "autoReply": r["auto_reply"], "authentication": r["authentication"],
        }
    )  # fmt: skip


def found_message_out(r: Any) -> FoundMessage:
    return FoundMessage(
        **conversation_message_out(r).model_dump(by_alias=True),
        convId=ids.render("conversation", r["conv_id"]) if r["conv_id"] else None,
    )


def conversation_out(conv: Any, rows: list[Any]) -> Conversation:
    return Conversation(
        id=ids.render("conversation", conv["id"]),
        identity=conv["handle"],
        counterpart=conv["counterpart"],
        subject=conv["subject"],
        account=account_out(conv["mailbox_id"], conv["mailbox_email"]),
        createdAt=iso(conv["created_at"]),
        updatedAt=iso(conv["updated_at"]),
        messages=[conversation_message_out(r) for r in rows],
    )


# --- audit -----------------------------------------------------------------------------------------


class AuditEvent(BaseModel):
    id: str = Field(description="The event's event_id.")
    type: str
    occurredAt: str
    event: dict[str, Any] = Field(description="The whole event as it is on the log.")


class AuditTrail(BaseModel):
    data: list[AuditEvent]


# --- the dialect -------------------------------------------------------------------------------------

# What a webhook's data takes from the messages view (the rest from the event).
_WEBHOOK_COLUMNS = frozenset(
    {"identity_id", "conv_id", "direction", "mailbox_id", "mailbox_email", "from_addr", "to_addrs", "subject",
     "rfc_message_id"}
)  # fmt: skip


def webhook_message(
    event: Any, stored: dict[str, Any], known: dict[str, Any], handles: Mapping[Any, str]
) -> dict[str, Any]:
    """A message webhook's data: `messageId`, `id` (the RFC Message-ID), `convId`, `identity`,
    `account`, `status`, … and what the event adds (`reason`, `smtp`, a recipient's status)."""
    m = {**{k: v for k, v in stored.items() if k in _WEBHOOK_COLUMNS}, **known}
    mailbox, email = m.get("mailbox_id"), m.get("mailbox_email")
    data: dict[str, Any] = {
        "messageId": ids.render("message", m["id"]),
        "id": m.get("rfc_message_id"),
        "convId": ids.render("conversation", m["conv_id"]) if m.get("conv_id") else None,
        "identity": handles.get(m.get("identity_id")),
        "direction": m.get("direction", "outbound"),
        "status": m["status"],
        "from": m.get("from_addr"),
        "to": m.get("to_addrs", []),
        "subject": m.get("subject"),
        "account": {"id": ids.render("mailbox", mailbox), "email": email} if mailbox and email else None,
    }
    for extra in ("reason", "smtp", "recipient", "statusCode", "diagnostic"):
        if extra in m:
            data[extra] = m[extra]
    return data


DIALECT = Dialect(
    name=ORIGINAL, error_body=ErrorBody, webhook_message=webhook_message, outcome_shows_message=True
)
