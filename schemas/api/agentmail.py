"""The AgentMail dialect (issue 27): AgentMail's `/v0` API, as its official Python SDK (`agentmail` 2.x)
calls it. An inbox is an identity whose handle is its address (its id), with a pool of one mailbox of
that address; messages and threads are the views every dialect reads.

Wire rules (the SDK is the judge): snake_case JSON; errors `{"name", "message"}`; pages
`{count, limit, next_page_token, <items>}`; times ISO-8601 with `Z`. The SDK parses answers without
validating them, so every field it calls required is always sent.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field

from schemas import ids
from schemas.api.common import (
    ApiModel,
    Base64Content,
    EmailAddress,
    FileName,
    HeaderText,
    MediaType,
    Subject,
    iso,
)
from schemas.api.senders import SenderPattern
from schemas.dialect import Dialect, WebhookFormat
from schemas.limits import ATTACHMENTS_MAX_COUNT

NAME = "agentmail"

# Our error kinds as AgentMail names them (the SDK picks its exception class by status, and shows these).
ERROR_NAMES = {
    "invalid_request": "ValidationError",
    "not_found": "NotFoundError",
    "conflict": "AlreadyExistsError",
    "forbidden": "MessageRejectedError",
    "rate_limited": "RateLimitError",
    "payload_too_large": "ValidationError",
}


class ErrorBody(BaseModel):
    """`{"name", "message"}` (a 400 also lists `errors`, each with its path and message)."""

    name: str
    message: str
    errors: list[dict[str, Any]] | None = None

    @classmethod
    def of(cls, type_: str, message: str) -> ErrorBody:
        name = ERROR_NAMES.get(type_, "".join(w.capitalize() for w in type_.split("_")) + "Error")
        errors = None
        if name == "ValidationError":
            field, _, said = message.partition(": ")
            errors = [{"path": field.split(".") if said else [], "message": said or message}]
        return cls(name=name, message=message, errors=errors)


def _listed(value: Any) -> Any:
    """A string where the SDK allows one address or label, or a list of them."""
    return [value] if isinstance(value, str) else value


Addresses = Annotated[list[EmailAddress], BeforeValidator(_listed)]
Labels = Annotated[list[Annotated[str, Field(min_length=1, max_length=100)]], BeforeValidator(_listed)]
InboxIds = Annotated[list[Annotated[str, Field(min_length=1, max_length=320)]], BeforeValidator(_listed)]  # addresses


class SendAttachment(ApiModel):
    """A file to send: its bytes in `content` (base64); `url` (a file for the server to fetch) is refused."""

    filename: FileName
    content_type: MediaType = "application/octet-stream"
    content_disposition: Literal["inline", "attachment"] | None = None
    content_id: str | None = Field(None, max_length=255)
    content: Base64Content
    url: str | None = Field(None, max_length=0, description="Not taken here: send the file's `content`.")


Files = Annotated[list[SendAttachment], Field(max_length=ATTACHMENTS_MAX_COUNT)]


class Attachment(BaseModel):
    attachment_id: str
    filename: str | None = None
    size: int
    content_type: str | None = None


def attachment_id(sha256: str, filename: str) -> str:
    """A file's id within its message: its bytes and its name (two files may share either)."""
    return "att_" + hashlib.sha256(f"{sha256}\0{filename}".encode()).hexdigest()[:32]


def attachments_out(row: Any) -> list[Attachment] | None:
    shown = [
        Attachment(attachment_id=attachment_id(a["sha256"], a["filename"]), filename=a["filename"], size=a["size"],
                   content_type=a["content_type"])
        for a in row.get("attachments") or []
    ]  # fmt: skip
    return shown or None


class AttachmentLink(BaseModel):
    attachment_id: str
    filename: str | None = None
    size: int
    content_type: str | None = None
    download_url: str = Field(description="A signed link to the bytes, valid until `expires_at`.")
    expires_at: str


class RawMessage(BaseModel):
    message_id: str
    size: int
    download_url: str = Field(description="A signed link to the message as it was sent or received (RFC 5322).")
    expires_at: str


# --- inboxes -----------------------------------------------------------------------------------------


class CreateInbox(ApiModel):
    username: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9._+-]+$")
    domain: str | None = Field(None, max_length=253)
    display_name: str | None = Field(None, max_length=200)
    client_id: str | None = Field(
        None, min_length=1, max_length=200, description="Creating twice with one `client_id` makes one inbox."
    )


class UpdateInbox(ApiModel):
    display_name: str | None = Field(None, max_length=200)


class Inbox(BaseModel):
    pod_id: str
    inbox_id: str = Field(description="Its address.")
    email: str
    display_name: str | None = None
    client_id: str | None = None
    updated_at: str
    created_at: str


class InboxList(BaseModel):
    count: int
    limit: int | None = None
    next_page_token: str | None = None
    inboxes: list[Inbox]


def inbox_out(identity: Any) -> Inbox:  # an identities row
    return Inbox(
        pod_id=ids.render("org", identity["org_id"]), inbox_id=identity["handle"], email=identity["handle"],
        display_name=identity["name"], client_id=identity["client_id"], updated_at=iso(identity["updated_at"]),
        created_at=iso(identity["created_at"]),
    )  # fmt: skip


# --- messages ----------------------------------------------------------------------------------------


class SendMessage(ApiModel):
    """One message to every address of `to`, `cc` and `bcc`."""

    to: Addresses = Field(min_length=1)
    cc: Addresses = Field(default_factory=list)
    bcc: Addresses = Field(default_factory=list)
    subject: Subject = ""
    text: str | None = None
    html: str | None = None
    attachments: Files = Field(default_factory=list)
    labels: Labels = Field(default_factory=list, max_length=50)


class ReplyMessage(ApiModel):
    """A reply in the message's thread: to its sender, or (`reply_all`) to everyone on it but this inbox,
    or to `to` (with `cc`, `bcc`) where given."""

    to: Addresses | None = None
    cc: Addresses = Field(default_factory=list)
    bcc: Addresses = Field(default_factory=list)
    reply_all: bool = False
    text: str | None = None
    html: str | None = None
    attachments: Files = Field(default_factory=list)
    labels: Labels = Field(default_factory=list, max_length=50)


class ReplyAll(ApiModel):
    text: str | None = None
    html: str | None = None
    attachments: Files = Field(default_factory=list)
    labels: Labels = Field(default_factory=list, max_length=50)


class ForwardMessage(ApiModel):
    """The message forwarded inline below the note (`text`, `html`), its files carried along."""

    to: Addresses = Field(min_length=1)
    cc: Addresses = Field(default_factory=list)
    bcc: Addresses = Field(default_factory=list)
    subject: Subject | None = None
    text: str | None = None
    html: str | None = None
    attachments: Files = Field(default_factory=list)
    labels: Labels = Field(default_factory=list, max_length=50)


class UpdateMessage(ApiModel):
    add_labels: Labels = Field(default_factory=list, max_length=50)
    remove_labels: Labels = Field(default_factory=list, max_length=50)


class UpdateMessageResponse(BaseModel):
    message_id: str
    labels: list[str]


SYSTEM_LABELS = frozenset({"sent", "received", "unread"})  # shown from the message's state, not stored


class SendMessageResponse(BaseModel):
    message_id: str
    thread_id: str


class MessageItem(BaseModel):
    inbox_id: str
    thread_id: str
    message_id: str
    labels: list[str]
    timestamp: str
    from_: str = Field(alias="from")
    to: list[str]
    cc: list[str] | None = None
    bcc: list[str] | None = None
    subject: str | None = None
    preview: str | None = None
    in_reply_to: str | None = None
    references: list[str] | None = None
    attachments: list[Attachment] | None = None
    size: int
    updated_at: str
    created_at: str

    model_config = {"populate_by_name": True}


class Message(MessageItem):
    text: str | None = None
    html: str | None = None


class MessageList(BaseModel):
    count: int
    limit: int | None = None
    next_page_token: str | None = None
    messages: list[MessageItem]


def labels_of(row: Any) -> list[str]:
    """The system labels AgentMail shows (`sent`, or `received` and `unread`), then the message's own."""
    if row["direction"] == "outbound":
        system = ["sent"]
    else:
        system = ["received"] if row.get("is_read") else ["received", "unread"]
    return [*system, *(label for label in row["labels"] or [] if label not in system)]


def message_item(row: Any, whole: type[MessageItem] = MessageItem, **extra: Any) -> MessageItem:
    """A messages-view row as AgentMail shows it (`whole`: Message, with its bodies)."""
    outbound = row["direction"] == "outbound"
    text = row["text_body"] or ""
    return whole(
        inbox_id=row["inbox_address"], thread_id=ids.render("thread", row["conv_id"]),
        message_id=ids.render("message", row["id"]), labels=labels_of(row), timestamp=iso(row["created_at"]),
        from_=row["from_addr"] or (row["inbox_address"] if outbound else "") or "", to=row["to_addrs"] or [],
        cc=row["cc_addrs"] or None, bcc=row["bcc_addrs"] or None, subject=row["subject"],
        preview=" ".join(text.split())[:200] or None, in_reply_to=row.get("in_reply_to"),
        references=row.get("refs") or None, attachments=attachments_out(row),
        size=len(text.encode()) + len((row["html_body"] or "").encode()) + sum(a["size"] for a in row.get("attachments") or []),
        updated_at=iso(row["updated_at"]), created_at=iso(row["created_at"]), **extra,
    )  # fmt: skip


def message_out(row: Any) -> Message:
    return message_item(row, Message, text=row["text_body"], html=row["html_body"])  # type: ignore[return-value]


# --- drafts ------------------------------------------------------------------------------------------

SEND_AT = (
    "When it goes out by itself (RFC 3339, with its offset or `Z`): a draft with one is scheduled at once, "
    "unless its inbox's sends wait for a person's approval (`requireApproval`)."
)


class CreateDraft(ApiModel):
    """A message kept to be sent later: a new one to `to`, or a reply to the message `in_reply_to`."""

    to: Addresses = Field(default_factory=list)
    cc: Addresses = Field(default_factory=list)
    bcc: Addresses = Field(default_factory=list)
    subject: Subject | None = None
    text: str | None = None
    html: str | None = None
    attachments: Files = Field(default_factory=list)
    labels: Labels = Field(default_factory=list, max_length=50)
    in_reply_to: str | None = Field(None, max_length=100, description="A message's id: the draft replies to it.")
    reply_all: bool = False
    send_at: str | None = Field(None, max_length=64, description=SEND_AT)
    client_id: str | None = Field(None, min_length=1, max_length=200, description="Creating twice makes one draft.")


class UpdateDraft(ApiModel):
    """A pending draft's edit (a field left out stays as it is; `send_at: null` unschedules)."""

    subject: Subject | None = None
    text: str | None = None
    html: str | None = None
    labels: Labels | None = Field(None, max_length=50)
    send_at: str | None = Field(None, max_length=64, description=SEND_AT)


class SendDraft(ApiModel):
    add_labels: Labels = Field(default_factory=list, max_length=50)
    remove_labels: Labels = Field(default_factory=list, max_length=50)


class DraftItem(BaseModel):
    inbox_id: str
    draft_id: str
    labels: list[str]
    to: list[str] | None = None
    cc: list[str] | None = None
    bcc: list[str] | None = None
    subject: str | None = None
    preview: str | None = None
    attachments: list[Attachment] | None = None
    send_status: Literal["scheduled"] | None = Field(None, description="`scheduled`: it goes out at `send_at`.")
    send_at: str | None = None
    updated_at: str


class Draft(DraftItem):
    text: str | None = None
    html: str | None = None
    created_at: str


class DraftList(BaseModel):
    count: int
    limit: int | None = None
    next_page_token: str | None = None
    drafts: list[DraftItem]


# --- lists -------------------------------------------------------------------------------------------


class AddListEntry(ApiModel):
    entry: SenderPattern
    reason: str | None = Field(None, max_length=500)


class ListEntry(BaseModel):
    entry: str
    organization_id: str
    direction: str
    list_type: str
    entry_type: str = Field(description="`email` or `domain`.")
    reason: str | None = None
    created_at: str


class ListEntries(BaseModel):
    count: int
    limit: int | None = None
    next_page_token: str | None = None
    entries: list[ListEntry]


def entry_out(row: Any, direction: str) -> ListEntry:  # a sender_rules row, or a suppression as one
    return ListEntry(
        entry=row["pattern"], organization_id=ids.render("org", row["org_id"]), direction=direction,
        list_type=row["action"], entry_type="email" if "@" in row["pattern"] else "domain",
        reason=row.get("reason"), created_at=iso(row["created_at"]),
    )  # fmt: skip


# --- webhooks ----------------------------------------------------------------------------------------

# Every event type AgentMail's SDK names; those this server has no such event for are accepted and never sent.
KNOWN_EVENT_TYPES = (
    "message.received", "message.received.spam", "message.received.blocked", "message.received.unauthenticated",
    "message.security.completed", "message.security.review", "message.security.override", "message.sent",
    "message.delivered", "message.bounced", "message.complained", "message.rejected", "message.opened",
    "domain.verified", "calendar.event.created", "calendar.event.updated", "calendar.event.deleted",
    "calendar.event.responded", "calendar.event.starting", "calendar.event.ending",
)  # fmt: skip
EventType = Literal[KNOWN_EVENT_TYPES]  # type: ignore[valid-type]
NO_PODS = "pods are not kept here (an organization's inboxes are named by inbox_ids)"


class CreateWebhook(ApiModel):
    url: HeaderText = Field(max_length=2048, description="http(s) URL; its host must resolve to public addresses.")
    event_types: list[EventType] = Field(min_length=1)
    inbox_ids: InboxIds | None = Field(None, max_length=100, description="Only these inboxes' events.")
    pod_ids: list[str] | None = Field(None, max_length=0, description=NO_PODS)
    client_id: str | None = Field(None, min_length=1, max_length=200)


class UpdateWebhook(ApiModel):
    event_types: list[EventType] | None = Field(None, min_length=1, description="Replaces the event types.")
    add_inbox_ids: InboxIds = Field(default_factory=list, max_length=100)
    remove_inbox_ids: InboxIds = Field(default_factory=list, max_length=100)
    add_pod_ids: list[str] = Field(default_factory=list, max_length=0, description=NO_PODS)
    remove_pod_ids: list[str] = Field(default_factory=list, max_length=0, description=NO_PODS)
    enabled: bool | None = None


class Webhook(BaseModel):
    webhook_id: str
    url: str
    event_types: list[str]
    inbox_ids: list[str] | None = None
    secret: str = Field(description="Verifies the svix-signature of every delivery (the Svix scheme).")
    enabled: bool
    client_id: str | None = None
    updated_at: str
    created_at: str


class WebhookList(BaseModel):
    count: int
    limit: int | None = None
    next_page_token: str | None = None
    webhooks: list[Webhook]


def webhook_out(row: Any, secret: str, inboxes: list[str] | None) -> Webhook:  # a webhook_endpoints row
    return Webhook(
        webhook_id=ids.render("webhook", row["id"]), url=row["url"], event_types=row["events"], inbox_ids=inboxes,
        secret=secret, enabled=row["enabled"], client_id=row["client_id"], updated_at=iso(row["updated_at"]),
        created_at=iso(row["created_at"]),
    )  # fmt: skip


# --- threads -----------------------------------------------------------------------------------------


class ThreadItem(BaseModel):
    inbox_id: str
    thread_id: str
    labels: list[str]
    timestamp: str
    senders: list[str]
    recipients: list[str]
    subject: str | None = None
    preview: str | None = None
    last_message_id: str
    message_count: int
    size: int
    updated_at: str
    created_at: str


class Thread(ThreadItem):
    count: int
    next_page_token: str | None = None
    messages: list[Message]


class ThreadList(BaseModel):
    count: int
    limit: int | None = None
    next_page_token: str | None = None
    threads: list[ThreadItem]


def thread_item(conv: Any, rows: list[Any], whole: type[ThreadItem] = ThreadItem, **extra: Any) -> ThreadItem:
    """A conversation with its messages in order, as AgentMail shows a thread."""
    shown = [message_item(r) for r in rows]
    last = shown[-1] if shown else None
    return whole(
        inbox_id=conv["handle"], thread_id=ids.render("thread", conv["id"]),
        labels=sorted({label for m in shown for label in m.labels}), timestamp=last.timestamp if last else iso(conv["updated_at"]),
        senders=list(dict.fromkeys(m.from_ for m in shown if m.from_)),
        recipients=list(dict.fromkeys(a for m in shown for a in m.to)), subject=conv["subject"],
        preview=last.preview if last else None, last_message_id=last.message_id if last else "",
        message_count=len(shown), size=sum(m.size for m in shown), updated_at=iso(conv["updated_at"]),
        created_at=iso(conv["created_at"]), **extra,
    )  # fmt: skip


def thread_out(conv: Any, rows: list[Any], page: list[Any] | None = None, next_page_token: str | None = None) -> Thread:
    """The thread of all its messages `rows`, showing the messages of `page` (all, if not given)."""
    messages = [message_out(r) for r in (rows if page is None else page)]
    return thread_item(
        conv, rows, Thread, count=len(messages), messages=messages, next_page_token=next_page_token
    )  # type: ignore[return-value]


# --- the dialect -------------------------------------------------------------------------------------


def shown_row(event: Any, row: dict[str, Any], handles: Any) -> dict[str, Any]:
    """A messages-view row from what an event's webhook knows of its message (the view's row, if it had
    it, with the event's facts winning), with what the view would hold filled in."""
    row = dict(row)
    row.setdefault("inbox_address", handles.get(row.get("identity_id"), ""))
    for key in ("text_body", "html_body", "from_addr", "subject", "in_reply_to", "conv_id"):
        row.setdefault(key, None)
    for key in ("labels", "to_addrs", "cc_addrs", "bcc_addrs", "refs"):
        row.setdefault(key, [])
    row.setdefault("direction", "outbound")
    row.setdefault("created_at", getattr(event, "occurred_at", None))
    row.setdefault("updated_at", row["created_at"])
    return row


def webhook_message(event: Any, stored: dict[str, Any], known: dict[str, Any], handles: Any) -> dict[str, Any]:
    """A message webhook's `data` for /v1/webhooks: the message as this dialect shows it (from the view,
    the event's facts winning)."""
    row = shown_row(event, {**stored, **known}, handles)
    return message_out(row).model_dump(mode="json", by_alias=True) | {"event_type": known.get("status")}


# AgentMail's own events (its SDK's `events` models), for its webhooks and its WebSocket: each names the
# message (`send`, `delivery`, ...) but message.received, which carries the message and its thread.
EVENT_KEYS = {
    "message.sent": "send",
    "message.delivered": "delivery",
    "message.bounced": "bounce",
    "message.complained": "complaint",
    "message.rejected": "reject",
}
EVENT_TYPES = ("message.received", *EVENT_KEYS)


def event_body(webhook: str, event: Any, row: dict[str, Any], handles: Any, thread: Any) -> dict[str, Any] | None:
    """An event as AgentMail sends it (None: one it has no event for). `thread`: the message's
    conversation and its messages, for message.received (else the thread of this message alone)."""
    if webhook not in EVENT_TYPES:
        return None
    row = shown_row(event, row, handles)
    head = {"type": "event", "event_type": webhook, "event_id": str(event.event_id)}
    if webhook == "message.received":
        conv, rows = thread or (
            {"id": row["conv_id"], "handle": row["inbox_address"], "subject": row["subject"],
             "created_at": row["created_at"], "updated_at": row["updated_at"]},
            [row],
        )  # fmt: skip
        return head | {
            "message": message_out(row).model_dump(mode="json", by_alias=True),
            "thread": thread_item(conv, rows).model_dump(mode="json"),
        }
    at = {
        "inbox_id": row["inbox_address"], "thread_id": ids.render("thread", row["conv_id"]) if row["conv_id"] else "",
        "message_id": ids.render("message", row["id"]), "timestamp": iso(event.occurred_at),
    }  # fmt: skip
    recipient = row.get("recipient")
    recipients = [recipient] if recipient else list(row["to_addrs"])
    match webhook:
        case "message.sent" | "message.delivered":
            at["recipients"] = recipients
        case "message.bounced":
            permanent = str(row.get("statusCode") or "5").startswith("5")
            at |= {
                "type": "Permanent" if permanent else "Transient", "sub_type": "General",
                "recipients": [{"address": a, "status": row.get("statusCode") or ""} for a in recipients],
            }  # fmt: skip
        case "message.complained":
            at |= {"type": "abuse", "sub_type": "", "recipients": recipients}
        case "message.rejected":
            at["reason"] = row.get("reason") or ""
    return head | {EVENT_KEYS[webhook]: at}


DIALECT = Dialect(
    name=NAME,
    error_body=ErrorBody,
    webhook_message=webhook_message,
    webhook_format=WebhookFormat(
        header_prefix="svix", body=event_body, with_thread=frozenset({"message.received"}),
        renames={"message.forwarded": "message.sent"},  # AgentMail has no event of its own for a forward
    ),
    # No hourly budget of its own: an inbox's daily cap (an identity's) holds its sends.
)
