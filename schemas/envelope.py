"""The one envelope every event travels in, and how events evolve.

- A field added: unknown fields are kept, not refused. A consumer older than the producer reads the
  event, and what it publishes or archives again carries the field on (the archive stores what it read).
- A meaning changed: the type's `schema_version` goes up, and an upcaster in `UPCASTERS` turns the
  version before into it. A consumer reads an old event as the current version, so it never handles two.
- A version newer than a consumer knows is refused (ValidationError: the consumer parks the event,
  and it can be re-driven after the upgrade). So consumers are upgraded before producers:
  docs/operations.md, "Upgrading".
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.ids import new_id

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
# (event type, version) -> the event's JSON form at that version, made the next version's.
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    """Fields shared by every event; `type` names a past-tense fact and selects the payload model."""

    model_config = ConfigDict(frozen=True, extra="allow")

    event_id: UUID = Field(default_factory=new_id, description="UUIDv7; consumers are idempotent on it.")
    type: str
    schema_version: int = 1
    occurred_at: datetime = Field(default_factory=utcnow)
    org_id: UUID
    identity_id: UUID | None = None
    correlation_id: str | None = Field(None, description="The HTTP request (or other origin) behind it.")
    causation_id: UUID | None = Field(None, description="The event that led to this one.")
    payload: Any

    @model_validator(mode="before")
    @classmethod
    def _current_version(cls, data: Any) -> Any:
        """An event of an older version of its type, upcast to the current one; a newer one refused."""
        if not isinstance(data, dict):
            return data
        current = cls.model_fields["schema_version"].default
        version = data.get("schema_version", current)  # absent: made here, now
        if version == current or not isinstance(version, int):
            return data
        if version > current:
            raise ValueError(
                f"{data.get('type')} version {version} is newer than this service reads ({current}): "
                "upgrade the consumers before the producers"
            )
        while version < current:
            data = UPCASTERS[(data["type"], version)](data)
            version = data["schema_version"]
        return data

    def caused(self, **fields: Any) -> dict[str, Any]:
        """Envelope fields for an event caused by this one: same org, identity and correlation."""
        return {
            "org_id": self.org_id,
            "identity_id": self.identity_id,
            "correlation_id": self.correlation_id,
            "causation_id": self.event_id,
            **fields,
        }
