"""How decide tells a waiting ingress its answers: PostgreSQL NOTIFY on `CHANNEL`, at decide's commit.

A notification is a JSON object from request event ids to the answers of that request's decisions:
what the API's response says of each recipient, that is the decision without the message itself.
A payload must stay under PostgreSQL's 8000 bytes, so one notification carries as many requests as
fit, and a request whose answers alone would not fit is named with `null`: the ingress then reads
its decisions from decide's record, as it does for a notification it missed.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from schemas.envelope import Envelope
from schemas.events import Affinity, RejectReason

CHANNEL = "sendstream_decided"
DECIDER = "decide"  # decide's consumer name: its group, and its records in processed_events
LIMIT = 7900  # bytes of one payload; PostgreSQL refuses 8000 and more


ANSWERED = ("SendAccepted", "SendRejected", "SendScheduled", "SendCancelled")


class Answer(BaseModel):
    """One decision as the ingress answers it."""

    model_config = ConfigDict(frozen=True)

    type: Literal["SendAccepted", "SendRejected", "SendScheduled", "SendCancelled"]
    message_id: UUID
    daily_cap: int = 0  # (a cancel names no cap)
    remaining: int = 0
    conv_id: UUID | None = None
    mailbox_id: UUID | None = None
    mailbox_email: str | None = None
    affinity: Affinity | None = None
    rfc_message_id: str | None = None
    # a rejection's, a cancel's, or why a message waits
    reason: RejectReason | Literal["requested", "replied", "cap_deferred"] | None = None
    send_at: datetime | None = None

    @classmethod
    def of(cls, decision: Envelope) -> Answer:
        fields = decision.payload.model_dump(include=set(cls.model_fields) - {"type"})
        return cls(type=decision.type, **fields)


def notifications(outputs: dict[UUID, list[Envelope]]) -> list[str]:
    """The payloads that tell the ingress the answers of these requests' decisions."""
    payloads: list[str] = []
    entries: list[str] = []
    size = 2
    for request_id, decisions in outputs.items():
        answered = [d for d in decisions if d.type in ANSWERED]  # what a send or reply request waits for
        if not answered and decisions:
            continue
        answers = "[" + ",".join(Answer.of(d).model_dump_json(exclude_none=True) for d in answered) + "]"
        entry = f'"{request_id}":{answers}'
        if len(entry.encode()) + 2 > LIMIT:
            entry = f'"{request_id}":null'
        if entries and size + len(entry.encode()) + 1 > LIMIT:
            payloads.append("{" + ",".join(entries) + "}")
            entries, size = [], 2
        entries.append(entry)
        size += len(entry.encode()) + 1
    if entries:
        payloads.append("{" + ",".join(entries) + "}")
    return payloads


def heard(payload: str) -> dict[str, list[Answer] | None]:
    """A notification's requests, each with its answers, or None where they must be read."""
    return {
        request_id: None if answers is None else [Answer.model_validate(a) for a in answers]
        for request_id, answers in json.loads(payload).items()
    }
