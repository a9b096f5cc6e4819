"""Wire format of the suppression list (SPEC 3.4; ours, in the identities dialect's shapes)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from schemas.api.common import ApiModel, EmailAddress

Reason = Literal["hard_bounce", "complaint", "unsubscribe", "manual"]


class AddSuppression(ApiModel):
    address: EmailAddress
    reason: Reason = Field("manual", description="Why: `manual` unless you are importing another kind.")


class Suppression(BaseModel):
    address: str
    reason: Reason
    messageId: str | None = Field(description="The message it was about (a bounce's, a complaint's).")
    eventId: str = Field(description="The SuppressionAdded event; its cause is in the message's audit trail.")
    causeEventId: str | None = Field(description="The event that caused it: the bounce, the complaint.")
    createdAt: str


class SuppressionList(BaseModel):
    data: list[Suppression]
    nextCursor: str | None
    hasMore: bool
