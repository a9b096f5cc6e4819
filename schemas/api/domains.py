"""Wire format of /v1/domains (SPEC 5a): the domains an organization has proven, or was granted."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from schemas.api.common import ApiModel, HeaderText


class CreateDomain(ApiModel):
    domain: HeaderText = Field(min_length=1, max_length=253, description="e.g. `acme.com` (covers its subdomains)")


class DnsRecord(BaseModel):
    """The record to publish: its presence proves the organization controls the domain's DNS."""

    type: Literal["TXT"] = "TXT"
    name: str
    value: str


class DomainCheck(BaseModel):
    at: str
    result: str = Field(description="What the latest lookup found, when it did not verify the domain.")


class Domain(BaseModel):
    domain: str = Field(description="Lower-case, in IDNA (ASCII) form.")
    status: Literal["pending", "verified"]
    verifiedBy: Literal["dns", "operator"] | None
    record: DnsRecord
    lastCheck: DomainCheck | None
    createdAt: str
    verifiedAt: str | None


class DomainList(BaseModel):
    data: list[Domain]
