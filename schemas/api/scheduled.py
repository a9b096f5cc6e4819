"""Scheduled sends (SPEC 3.5) as every dialect sees them: what waits (`GET /v1/scheduled`), and a cancel."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ScheduledSend(BaseModel):
    messageId: str = Field(description="Ours (`msg_…`): what it is cancelled by.")
    identity: str = Field(description="The sending identity's handle (an inbox's or a mailbox's address).")
    to: list[str]
    subject: str
    convId: str
    sendAt: str = Field(description="When it fires (UTC).")


class ScheduledList(BaseModel):
    """Soonest first."""

    data: list[ScheduledSend]
    nextCursor: str | None
    hasMore: bool


class Cancelled(BaseModel):
    """A scheduled send that will not go out."""

    id: str
    status: Literal["cancelled"]
