"""Drafts a person approves (SPEC 3.5), as every dialect's drafts are shown: `/v1/drafts`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from schemas.api.common import ApiModel, Subject, TimeZone
from schemas.api.identities import SendResponse

DraftStatus = Literal["pending", "approved", "rejected", "cancelled"]


class Draft(BaseModel):
    id: str = Field(description="`drf_…`")
    identity: str = Field(description="The sending identity's handle (an inbox's or a mailbox's address).")
    status: DraftStatus
    to: list[str] = Field(description="Every recipient, each message's in turn (a reply's: those it names).")
    subject: str = Field(description="Empty for a reply: it goes out under `Re:` and its conversation's subject.")
    text: str | None
    html: str | None
    sendAt: str | None = Field(description="When it goes out once approved (null: at once).")
    messageIds: list[str] = Field(description="The messages it sends (`msg_…`): cancelling one cancels the draft.")
    convIds: list[str]
    reason: str | None = Field(description="A rejection's reason.")
    createdAt: str
    updatedAt: str


class DraftList(BaseModel):
    """Oldest first."""

    data: list[Draft]
    nextCursor: str | None
    hasMore: bool


class UpdateDraft(ApiModel):
    """What a pending draft's edit changes; a field left out stays as it is."""

    subject: Subject | None = None
    text: str | None = None
    html: str | None = None
    sendAt: str | None = Field(None, max_length=64, description="A new time (null: at once once approved).")
    timezone: TimeZone | None = Field(None, description="The IANA time zone of a local `sendAt`.")


class ApproveDraft(ApiModel):
    ifUpdatedAt: str | None = Field(
        None, max_length=64,
        description="Approve only the draft as it was at this `updatedAt` (the version a person reviewed): "
        "409 `draft_changed` if it was edited since.",
    )


class RejectDraft(ApiModel):
    reason: str = Field(min_length=1, max_length=1000)


class ApprovedDraft(SendResponse):
    """The send's answer, as `POST /v1/identities/{handle}/send` gives it, with the draft approved."""

    draft: Draft
