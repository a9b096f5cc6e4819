"""The one envelope every event travels in."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from schemas.ids import new_id


def utcnow() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    """Fields shared by every event; `type` names a past-tense fact and selects the payload model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: UUID = Field(default_factory=new_id, description="UUIDv7; consumers are idempotent on it.")
    type: str
    schema_version: int = 1
    occurred_at: datetime = Field(default_factory=utcnow)
    org_id: UUID
    identity_id: UUID | None = None
    correlation_id: str | None = Field(None, description="The HTTP request (or other origin) behind it.")
    causation_id: UUID | None = Field(None, description="The event that led to this one.")
    payload: Any

    def caused(self, **fields: Any) -> dict[str, Any]:
        """Envelope fields for an event caused by this one: same org, identity and correlation."""
        return {
            "org_id": self.org_id,
            "identity_id": self.identity_id,
            "correlation_id": self.correlation_id,
            "causation_id": self.event_id,
            **fields,
        }
