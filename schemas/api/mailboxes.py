"""Wire format of the mailboxes dialect (seeds/mailboxes-api-inkbox.txt, SPEC 3.3).

A mailbox is an identity addressed by its handle, an email address (SPEC 2), with a pool of one account
of that address; ids are bare UUIDs. Errors are `{"detail": {"error", "message"}}`, where the seed's
own client reads them. Message objects render rows of the messages view (services/common/domain/views.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field, RootModel, model_validator

from schemas import ids
from schemas.api.common import (
    ApiModel,
    Base64Content,
    EmailAddress,
    FileName,
    HeaderText,
    LaterSnake,
    MediaType,
    MessageIdText,
    SmtpSettings,
    Subject,
    check_recipients,
    event_row,
    iso,
)
from schemas.dialect import Dialect, HourlyBudget
from schemas.events import Attachment
from schemas.limits import ATTACHMENTS_MAX_COUNT
from schemas.status import MessageStatus

NOUNS = {"identity": "Mailbox", "message": "Message", "attachment": "Attachment", "conversation": "Thread"}
SNIPPET = 200  # characters of the text body a list item shows


class DetailErrorBody(BaseModel):
    """The mailboxes dialect's error: `{"detail": {"error", "message"}}` (the seed's client reads
    `detail`, and `detail.error` for the kind of failure)."""

    class Detail(BaseModel):
        error: str
        message: str

    detail: Detail

    @classmethod
    def of(cls, type_: str, message: str) -> DetailErrorBody:
        return cls(detail=cls.Detail(error=type_, message=message))


# --- mailboxes (ours: the seed creates them elsewhere) ----------------------------------------------


class CreateMailbox(ApiModel):
    """A mailbox of this address; without `smtp` it sends through the operator's default relay."""

    email_address: EmailAddress
    display_name: HeaderText | None = Field(None, min_length=1, max_length=255)
    smtp: SmtpSettings | None = None


class Mailbox(BaseModel):
    id: str
    email_address: str
    display_name: str | None
    sending_domain: str
    filter_mode: Literal["blacklist"] = "blacklist"
    agent_identity_id: str | None = None
    created_at: str
    updated_at: str


def mailbox_out(identity: Any) -> Mailbox:  # an identities row
    return Mailbox(
        id=str(identity["id"]),
        email_address=identity["handle"],
        display_name=identity["name"],
        sending_domain=identity["handle"].rpartition("@")[2],
        created_at=iso(identity["created_at"]),
        updated_at=iso(identity["updated_at"]),
    )


class MailboxList(RootModel[list[Mailbox]]):
    """`GET /mailboxes` answers a bare array, as the seed's client reads it."""


# --- requests ---------------------------------------------------------------------------------------


class AttachmentUpload(ApiModel):
    """A file to send (25 MB of files at most; blocked types are refused with a 400 naming the file)."""

    filename: FileName
    content_type: MediaType = "application/octet-stream"
    content_base64: Base64Content


class Recipients(ApiModel):
    to: list[EmailAddress] = Field(default_factory=list)
    cc: list[EmailAddress] = Field(default_factory=list)
    bcc: list[EmailAddress] = Field(default_factory=list)

    @model_validator(mode="after")
    def _distinct(self) -> Recipients:
        check_recipients(self.to, self.cc, self.bcc)
        return self

    @property
    def any(self) -> bool:
        return bool(self.to or self.cc or self.bcc)


class SendMessage(LaterSnake):
    recipients: Recipients
    subject: Subject
    body_text: str | None = None
    body_html: str | None = None
    in_reply_to_message_id: MessageIdText | None = Field(
        None, description="RFC 5322 Message-ID of the message this one replies to."
    )
    reply_to: EmailAddress | None = None
    attachments: list[AttachmentUpload] = Field(default_factory=list, max_length=ATTACHMENTS_MAX_COUNT)
    unsubscribe: bool | None = Field(
        None,
        description="Ours: carry one-click List-Unsubscribe (RFC 8058). Unset: the organization's default.",
    )

    @model_validator(mode="after")
    def _to(self) -> SendMessage:
        if not self.recipients.to:
            raise ValueError("recipients.to: needs at least one address")
        return self


class ForwardMessage(LaterSnake):
    recipients: Recipients = Field(default_factory=Recipients)
    mode: Literal["inline", "wrapped"] = "inline"
    subject: Subject | None = None
    body_text: str | None = None
    body_html: str | None = None
    additional_attachments: list[AttachmentUpload] = Field(
        default_factory=list, max_length=ATTACHMENTS_MAX_COUNT
    )
    include_original_attachments: bool = True
    reply_to: EmailAddress | None = None

    @model_validator(mode="after")
    def _someone(self) -> ForwardMessage:
        if not self.recipients.any:
            raise ValueError("recipients: at least one address is required across to, cc and bcc")
        return self


class UpdateFlags(ApiModel):
    is_read: bool | None = None
    is_starred: bool | None = None


# --- messages ---------------------------------------------------------------------------------------

SeedStatus = Literal[
    "queued", "sent", "delivered", "bounced", "failed", "received", "scheduled", "cancelled", "pending_approval"
]
# The core's statuses in the seed's set (SPEC 2).
SEED_STATUS: dict[MessageStatus, SeedStatus] = {
    "scheduled": "scheduled", "cancelled": "cancelled", "pending_approval": "pending_approval",
    "queued": "queued", "sent": "sent", "delivered": "delivered", "bounced": "bounced",
    "complained": "bounced", "failed": "failed", "rejected": "failed", "received": "received",
}  # fmt: skip
_QUEUE_ID = re.compile(r"queued as ([A-Za-z0-9._-]+)", re.IGNORECASE)


class Message(BaseModel):
    """MessageResponse: a list item, without bodies."""

    id: str
    mailbox_id: str
    thread_id: str | None
    message_id: str = Field(description="The RFC 5322 Message-ID (empty until the message is decided).")
    from_address: str
    to_addresses: list[str]
    cc_addresses: list[str] | None
    subject: str | None
    snippet: str | None
    direction: Literal["inbound", "outbound"]
    status: SeedStatus
    is_read: bool
    is_starred: bool
    has_attachments: bool
    reply_to: str | None
    created_at: str
    send_at: str | None = Field(
        None, description="Ours, a `scheduled` message: when it goes out (UTC).", exclude_if=lambda v: v is None
    )
    draft_id: str | None = Field(
        None, description="Ours, a `pending_approval` message: the draft that approves it.",
        exclude_if=lambda v: v is None,
    )  # fmt: skip


class AttachmentMetadata(BaseModel):
    filename: str
    content_type: str
    size: int


class MessageDetail(Message):
    """MessageDetailResponse: one message with its bodies."""

    body_text: str | None
    body_html: str | None
    bcc_addresses: list[str] | None
    in_reply_to: str | None
    references: list[str] | None
    attachment_metadata: list[AttachmentMetadata] | None
    ses_message_id: str | None = Field(description="The relay's queue id, where its reply gave one.")
    updated_at: str


class MessagePage(BaseModel):
    items: list[Message]
    next_cursor: str | None
    has_more: bool


class MessageList(BaseModel):
    items: list[Message]


class DownloadLink(BaseModel):
    url: str
    filename: str
    expires_in: int


def _snippet(text: str | None) -> str | None:
    return " ".join(text.split())[:SNIPPET] if text else None


def attachments_of(row: Any) -> list[Attachment]:
    return [a if isinstance(a, Attachment) else Attachment.model_validate(a) for a in row["attachments"]]


def message_item(row: Any) -> Message:
    """A messages-view row (or a `partial_row`-style dict) as a list item."""
    outbound = row["direction"] == "outbound"
    return Message(
        id=str(row["id"]),
        mailbox_id=str(row["identity_id"]),
        thread_id=str(row["conv_id"]) if row["conv_id"] else None,
        message_id=row["rfc_message_id"] or "",
        from_address=row["from_addr"] or (row["inbox_address"] if outbound else "") or "",
        to_addresses=row["to_addrs"],
        cc_addresses=row["cc_addrs"] or None,
        subject=row["subject"],
        snippet=_snippet(row["text_body"]),
        direction=row["direction"],
        status=SEED_STATUS[row["status"]],
        is_read=bool(row.get("is_read")),
        is_starred=bool(row.get("is_starred")),
        has_attachments=bool(row["attachments"]),
        reply_to=row.get("reply_to"),
        created_at=iso(row["created_at"]),
        send_at=iso(row.get("send_at")),
        draft_id=row.get("draft_id") and ids.render("draft", row["draft_id"]),
    )


def message_detail(row: Any) -> MessageDetail:
    found = _QUEUE_ID.search(row.get("smtp_message") or "")
    return MessageDetail(
        **message_item(row).model_dump(),
        body_text=row["text_body"],
        body_html=row["html_body"],
        bcc_addresses=row["bcc_addrs"] or None,
        in_reply_to=row["in_reply_to"],
        references=row["refs"] or None,
        attachment_metadata=[
            AttachmentMetadata(filename=a.filename, content_type=a.content_type, size=a.size)
            for a in attachments_of(row)
        ]
        or None,
        ses_message_id=found.group(1) if found else None,
        updated_at=iso(row["updated_at"]),
    )


# --- the dialect -------------------------------------------------------------------------------------


def webhook_message(
    event: Any, stored: dict[str, Any], known: dict[str, Any], handles: Mapping[Any, str]
) -> dict[str, Any]:
    """A message webhook's data: the message as a list item."""
    return message_item(event_row(event, stored, known)).model_dump(mode="json")


DIALECT = Dialect(
    name="mailboxes",
    error_body=DetailErrorBody,
    webhook_message=webhook_message,
    hourly_budget=HourlyBudget("mailboxes.send:{identity_id}", "mailbox_sends_per_hour", "sends per mailbox"),
    body_fields={"text": "body_text", "html": "body_html"},
)
