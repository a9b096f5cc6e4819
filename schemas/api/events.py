"""The organization's event feed (`/v1/events`, `/v1/events/stream`) and the long poll for a reply
(`/v1/messages/wait`): events read from the archive (projections/archive.py), in order."""

from __future__ import annotations

from pydantic import BaseModel, Field

from schemas.api.identities import AuditEvent


class FeedEvent(AuditEvent):
    cursor: str = Field(
        description="Where this event is in the organization's feed: pass it as `after` to go on."
    )


class EventPage(BaseModel):
    data: list[FeedEvent]
    nextCursor: str = Field(
        description="Pass as `after` for the next page (the last event's cursor, or `after`)."
    )
    hasMore: bool


class WaitResult(BaseModel):
    message: FeedEvent | None = Field(
        description="The first message received after `after`; null if none came in time."
    )
    cursor: str = Field(description="Pass as `after` to wait for the next one.")
