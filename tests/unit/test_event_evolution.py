"""Events that evolve (schemas/envelope.py): an older consumer reads a newer producer's events and
keeps what it does not know; an old version is read as the current one; a newer version is refused."""

from __future__ import annotations

import json
from typing import Any, Literal
from uuid import uuid4

import pytest
from pydantic import ValidationError

from schemas.envelope import UPCASTERS, Envelope
from schemas.events import Payload, SuppressionAdded, SuppressionAddedPayload, parse_event


def newer(event: Envelope, **extra: Any) -> bytes:
    """`event` as a producer one version ahead writes it: a field more in the envelope and the payload."""
    data = json.loads(event.model_dump_json())
    data["tenant_region"] = "eu-1"
    data["payload"].update(extra)
    return json.dumps(data).encode()


def test_an_older_consumer_reads_a_newer_producers_event_and_keeps_its_new_fields() -> None:
    sent = SuppressionAdded(
        org_id=uuid4(), payload=SuppressionAddedPayload(address="x@example.com", reason="manual")
    )
    read = parse_event(newer(sent, expires_at="2027-01-01T00:00:00Z"))
    assert isinstance(read, SuppressionAdded)
    assert (read.event_id, read.payload.address, read.payload.reason) == (
        sent.event_id, "x@example.com", "manual",
    )  # fmt: skip
    # What it publishes or archives again carries the fields on (the archive stores model_dump).
    again = json.loads(read.model_dump_json())
    assert again["tenant_region"] == "eu-1"
    assert again["payload"]["expires_at"] == "2027-01-01T00:00:00Z"
    assert parse_event(read.model_dump_json()) == read


def test_a_newer_version_of_a_type_is_refused_naming_the_upgrade_order() -> None:
    data = json.loads(
        SuppressionAdded(org_id=uuid4(), payload=SuppressionAddedPayload(address="x@example.com", reason="manual"))
        .model_dump_json()
    )
    data["schema_version"] = 2
    with pytest.raises(ValidationError, match="upgrade the consumers before the producers"):
        parse_event(json.dumps(data))


class RenamedPayload(Payload):
    recipient: str


class Renamed(Envelope):
    """A type whose payload field `address` became `recipient` in version 2."""

    type: Literal["Renamed"] = "Renamed"
    schema_version: int = 2
    payload: RenamedPayload


def test_an_old_version_is_read_as_the_current_one(monkeypatch: pytest.MonkeyPatch) -> None:
    def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
        payload = dict(data["payload"])
        payload["recipient"] = payload.pop("address")
        return {**data, "payload": payload, "schema_version": 2}

    monkeypatch.setitem(UPCASTERS, ("Renamed", 1), v1_to_v2)
    old = {"type": "Renamed", "schema_version": 1, "org_id": str(uuid4()), "payload": {"address": "x@example.com"}}
    event = Renamed.model_validate_json(json.dumps(old))
    assert (event.schema_version, event.payload.recipient) == (2, "x@example.com")
    assert "address" not in event.payload.model_dump()
    assert Renamed(org_id=uuid4(), payload=RenamedPayload(recipient="y@example.com")).schema_version == 2
