"""The organization's event feed (`/v1/events`, `/v1/events/stream`) and the long poll for a reply
(`/v1/messages/wait`): events read from the archive (projections/archive.py), in order."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class FeedEvent(BaseModel):
    cursor: str = Field(
        description="Where this event is in the organization's feed: pass it as `after` to go on."
    )
    id: str = Field(description="The event's event_id.")
    type: str
    occurredAt: str
    event: dict[str, Any] = Field(description="The whole event as it is on the log.")


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
