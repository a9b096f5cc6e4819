"""Webhook endpoints and their deliveries (SPEC 3.4)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from schemas.api.common import ApiModel, HeaderText
from schemas.webhooks import EVENT_NAMES

EventName = Literal[EVENT_NAMES]  # type: ignore[valid-type]
URL_HELP = "http(s) URL; its host must resolve to public addresses (or an allowed network)."


def _distinct(events: list[str] | None) -> list[str] | None:
    if events is not None and len(set(events)) != len(events):
        raise ValueError("lists an event more than once")
    return events


class CreateWebhook(ApiModel):
    url: HeaderText = Field(max_length=2048, description=URL_HELP)
    events: list[EventName] = Field(min_length=1, description="The event types to receive.")
    description: HeaderText = Field("", max_length=500)

    _events = field_validator("events")(_distinct)


class UpdateWebhook(ApiModel):
    url: HeaderText | None = Field(None, max_length=2048, description=URL_HELP)
    events: list[EventName] | None = Field(None, min_length=1)
    description: HeaderText | None = Field(None, max_length=500)
    enabled: bool | None = Field(None, description="true re-enables a disabled endpoint.")

    _events = field_validator("events")(_distinct)


class Webhook(BaseModel):
    id: str
    url: str
    events: list[str]
    description: str
    enabled: bool
    disabledReason: str | None
    createdAt: str
    updatedAt: str


class WebhookCreated(Webhook):
    secret: str = Field(description="The signing secret (`whsec_…`). Shown only here and on rotation.")


class WebhookList(BaseModel):
    data: list[Webhook]


class SecretRotated(BaseModel):
    secret: str = Field(description="The new signing secret, shown once.")
    previousSecretExpiresAt: str = Field(description="Until then deliveries carry both signatures.")


class DeliveryAttempt(BaseModel):
    attempt: int
    startedAt: str
    durationMs: int
    statusCode: int | None
    error: str
    response: str = Field(description="The first bytes of the endpoint's answer.")


class Delivery(BaseModel):
    id: str = Field(description="The `webhook-id` header sent on every attempt of this delivery.")
    webhookId: str
    type: str
    messageId: str | None
    state: Literal["pending", "delivered", "failed"]
    attemptCount: int
    nextAttemptAt: str | None
    lastStatusCode: int | None
    createdAt: str
    deliveredAt: str | None
    payload: dict = Field(description="The body sent.")
    attempts: list[DeliveryAttempt]


class DeliveryList(BaseModel):
    data: list[Delivery]
    nextCursor: str | None
    hasMore: bool
