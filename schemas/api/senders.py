"""Wire format of an organization's sender rules for inbound mail (ours; the identities dialect's shapes)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field

from schemas.api.common import ApiModel, email_address

_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")


def sender_pattern(value: str) -> str:
    """An address (`ana@example.test`) or a domain (`example.test`: it and its subdomains), lower-cased."""
    if "@" in value:
        return email_address(value).lower()
    if not _DOMAIN.match(value.lower()):
        raise ValueError("must be an email address or a domain name")
    return value.lower()


SenderPattern = Annotated[str, Field(min_length=1, max_length=254), AfterValidator(sender_pattern)]


class AddSenderRule(ApiModel):
    pattern: SenderPattern
    action: Literal["allow", "block"]


class SenderRule(BaseModel):
    pattern: str
    action: Literal["allow", "block"]
    createdAt: str


class SenderRuleList(BaseModel):
    data: list[SenderRule]


class RefusedMail(BaseModel):
    sender: str
    recipient: str
    stage: Literal["rcpt", "data"] = Field(
        description="Refused at RCPT (envelope sender) or DATA (From header)."
    )
    rule: str | None = Field(description="The block rule that refused it; null: it matched no allow rule.")
    refusedAt: str


class RefusedMailList(BaseModel):
    data: list[RefusedMail]
