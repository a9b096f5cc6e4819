"""Wire format of the inboxes dialect (seeds/inboxes-api-sendook.txt, SPEC 3.2).

An inbox is an identity whose handle is the inbox's address, with a pool of one account of that
address (SPEC 2): an identity created in either dialect is visible in both. Errors are
`{"error", "message"}` with the seed's strings ("Inbox not found")."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, RootModel, model_validator

from schemas import ids
from schemas.api.common import (
    ApiModel,
    Base64Content,
    EmailAddress,
    FileName,
    FlatErrorBody,
    HeaderText,
    Later,
    MediaType,
    SmtpSettings,
    Subject,
    check_recipients,
    event_row,
    iso,
    partial_row,
)
from schemas.commands import MessageOutcome
from schemas.dialect import Dialect, HourlyBudget
from schemas.events import Attachment, Content
from schemas.limits import ATTACHMENTS_MAX_COUNT
from schemas.status import MessageStatus

NOUNS = {"identity": "Inbox", "message": "Message", "conversation": "Thread"}


class CreateInbox(ApiModel):
    """Both optional, as the seed's own clients send them: without `email` the inbox gets an address on
    the operator's default domain; without `smtp` it sends through the operator's default relay."""

    email: EmailAddress | None = None
    name: HeaderText | None = Field(None, min_length=1, max_length=255)
    smtp: SmtpSettings | None = None


class Inbox(BaseModel):
    id: str
    organizationId: str
    name: str | None
    email: str
    createdAt: str
    updatedAt: str


class InboxList(RootModel[list[Inbox]]):
    """`GET /v1/inboxes` answers a bare array."""


def inbox_out(identity) -> Inbox:  # an identities row
    return Inbox(
        id=ids.render("inbox", identity["id"]),
        organizationId=ids.render("org", identity["org_id"]),
        name=identity["name"],
        email=identity["handle"],
        createdAt=iso(identity["created_at"]),
        updatedAt=iso(identity["updated_at"]),
    )


# --- messages --------------------------------------------------------------------------------------

Label = Annotated[str, Field(min_length=1, max_length=100)]


class AttachmentUpload(ApiModel):
    """A file to send: 25 MB of files per message at most, and the composed message 10 MB; executables
    and scripts are refused (400 naming the file), as is a `contentType` the bytes contradict."""

    content: Base64Content
    name: FileName
    contentType: MediaType = Field("application/octet-stream", description="The file's media type.")


class SendMessage(Later):
    """One message to every address of `to`, `cc` and `bcc` (Bcc only in the envelope, never a header)."""

    to: list[EmailAddress] = Field(min_length=1)
    cc: list[EmailAddress] = Field(default_factory=list)
    bcc: list[EmailAddress] = Field(default_factory=list)
    subject: Subject
    text: str
    html: str
    labels: list[Label] = Field(default_factory=list, max_length=50)
    attachments: list[AttachmentUpload] = Field(default_factory=list, max_length=ATTACHMENTS_MAX_COUNT)
    unsubscribe: bool | None = Field(
        None,
        description="Ours: carry one-click List-Unsubscribe (RFC 8058); following it suppresses `to[0]`. "
        "Unset: the organization's `unsubscribeByDefault`.",
    )

    @model_validator(mode="after")
    def _recipients(self) -> SendMessage:
        check_recipients(self.to, self.cc, self.bcc)
        return self


class MessageAttachment(BaseModel):
    """A file of a message: `content` (base64) when one message is read whole, not in lists."""

    name: str
    contentType: str
    size: int
    content: str | None = None


def attachments_out(attachments: list[Any], files: dict[str, bytes] | None = None) -> list[MessageAttachment]:
    """Attachments as stored (events' or the view's), with their bytes from `files` by sha256 if given."""
    out = []
    for a in attachments:
        a = a if isinstance(a, Attachment) else Attachment.model_validate(a)
        data = files.get(a.sha256) if files is not None else None
        content = base64.b64encode(data).decode() if data is not None else None
        out.append(
            MessageAttachment(name=a.filename, contentType=a.content_type, size=a.size, content=content)
        )
    return out


SeedStatus = Literal[
    "sent", "received", "delivered", "bounced", "complained", "rejected", "scheduled", "cancelled", "pending_approval"
]


class Message(BaseModel):
    """The seed's message object."""

    id: str
    organizationId: str
    inboxId: str
    threadId: str
    fromInboxId: str | None
    from_: str | None = Field(alias="from")
    toInboxId: str | None = None
    to: list[str]
    cc: list[str]
    bcc: list[str]
    subject: str
    text: str | None
    html: str | None
    labels: list[str]
    attachments: list[MessageAttachment]
    externalMessageId: str | None = Field(description="The RFC 5322 Message-ID.")
    status: SeedStatus
    reason: str | None = Field(None, description="Ours: why a `rejected` message was not sent.")
    replyText: str | None = Field(
        None, description="Ours, received mail: its text without quoted history and signature."
    )
    autoReply: bool = Field(
        False, description="Ours, received mail: an out-of-office or other automatic reply."
    )
    authentication: dict[str, str] | None = Field(
        None, description="Ours, received mail: SPF, DKIM and DMARC as our server judged them."
    )
    sendAt: str | None = Field(
        None, description="Ours, a `scheduled` message: when it goes out (UTC).", exclude_if=lambda v: v is None
    )
    draftId: str | None = Field(
        None, description="Ours, a `pending_approval` message: the draft that approves it.",
        exclude_if=lambda v: v is None,
    )  # fmt: skip
    createdAt: str
    updatedAt: str

    model_config = {"populate_by_name": True}


def sent_message(m: MessageOutcome, inbox: Any, content: Content, at: datetime) -> Message:
    """A message the inbox just sent, as the send and reply routes answer it. The seed has no `queued`:
    a message accepted (or still being decided) shows `sent`, one refused `rejected`, one for later
    `scheduled` with its `sendAt`."""
    return message_out(
        partial_row(
            id=m.message_id, org_id=inbox["org_id"], identity_id=inbox["id"], conv_id=m.conv_id,
            from_addr=m.mailbox_email, inbox_address=inbox["handle"], to_addrs=m.to, cc_addrs=content.cc,
            bcc_addrs=content.bcc, subject=content.subject, text_body=content.text, html_body=content.html,
            labels=content.labels, attachments=content.attachments, rfc_message_id=m.rfc_message_id,
            status={"rejected": "rejected", "scheduled": "scheduled", "pending_approval": "pending_approval"}.get(
                m.state, "sent"
            ),
            reason=m.reason, created_at=at, updated_at=at,
        )
    ).model_copy(update={"sendAt": iso(m.send_at), "draftId": m.draft_id and ids.render("draft", m.draft_id)})  # fmt: skip


class MessageList(RootModel[list[Message]]):
    """`GET …/messages` answers a bare array."""


class ReplyMessage(Later):
    text: str
    html: str


class Thread(BaseModel):
    id: str
    organizationId: str
    inboxId: str
    subject: str | None
    messages: list[Message]
    createdAt: str
    updatedAt: str


class ThreadList(RootModel[list[Thread]]):
    """`GET …/threads` answers a bare array, most recently active first."""


# The core's statuses in the seed's set (SPEC 2): it has no `queued` nor `failed`.
SEED_STATUS: dict[MessageStatus, SeedStatus] = {
    "scheduled": "scheduled", "cancelled": "cancelled", "pending_approval": "pending_approval",
    "queued": "sent", "sent": "sent", "delivered": "delivered", "bounced": "bounced",
    "complained": "complained", "failed": "rejected", "rejected": "rejected", "received": "received",
}  # fmt: skip


def message_out(row: Any, files: dict[str, bytes] | None = None) -> Message:
    """A message of the messages view (services/common/domain/views.py) as the seed shows it; with `files`
    (its attachments' bytes), whole. Between two hosted inboxes both copies name both inboxes."""
    inbox_id = ids.render("inbox", row["identity_id"])
    outbound = row["direction"] == "outbound"
    return Message(
        id=ids.render("message", row["id"]),
        organizationId=ids.render("org", row["org_id"]),
        inboxId=inbox_id,
        threadId=ids.render("thread", row["conv_id"]),
        fromInboxId=inbox_id if outbound else _inbox(row.get("from_identity_id")),
        toInboxId=inbox_id if not outbound else _inbox(row.get("to_identity_id")),
        from_=row["from_addr"] or (row["inbox_address"] if row["direction"] == "outbound" else None),
        to=row["to_addrs"],
        cc=row["cc_addrs"],
        bcc=row["bcc_addrs"],
        subject=row["subject"] or "",
        text=row["text_body"],
        html=row["html_body"],
        labels=row["labels"],
        attachments=attachments_out(row["attachments"], files),
        externalMessageId=row["rfc_message_id"],
        status=SEED_STATUS[row["status"]],
        reason=row["reason"],
        replyText=row.get("reply_text"),
        autoReply=bool(row.get("auto_reply")),
        authentication=row.get("authentication"),
        createdAt=iso(row["created_at"]),
        updatedAt=iso(row["updated_at"]),
    )


def _inbox(identity_id: Any) -> str | None:
    return ids.render("inbox", identity_id) if identity_id else None


def thread_out(conv: Any, rows: list[Any]) -> Thread:
    return Thread(
        id=ids.render("thread", conv["id"]),
        organizationId=ids.render("org", conv["org_id"]),
        inboxId=ids.render("inbox", conv["identity_id"]),
        subject=conv["subject"],
        messages=[message_out(r) for r in rows],
        createdAt=iso(conv["created_at"]),
        updatedAt=iso(conv["updated_at"]),
    )


# --- the dialect -------------------------------------------------------------------------------------


def webhook_message(
    event: Any, stored: dict[str, Any], known: dict[str, Any], handles: Mapping[Any, str]
) -> dict[str, Any]:
    """A message webhook's data: the whole message object (bodies, labels, files)."""
    return message_out(event_row(event, stored, known)).model_dump(mode="json", by_alias=True)


DIALECT = Dialect(
    name="inboxes",
    error_body=FlatErrorBody,
    webhook_message=webhook_message,
    # An organization's sends and replies to its inboxes share one budget.
    hourly_budget=HourlyBudget("inboxes.send", "inbox_sends_per_hour", "requests"),
)
