"""Wire format of the inboxes dialect (seeds/inboxes-api-sendook.txt, SPEC 3.2).

An inbox is an identity whose handle is the inbox's address, with a pool of one account of that
address (SPEC 2): an identity created in either dialect is visible in both. Errors are
`{"error", "message"}` with the seed's strings ("Inbox not found")."""

from __future__ import annotations

from pydantic import BaseModel, Field, RootModel

from schemas import ids
from schemas.api.common import ApiModel, EmailAddress, HeaderText, iso
from schemas.api.identities import SmtpSettings

NOUNS = {"identity": "Inbox", "message": "Message", "conversation": "Thread"}


class CreateInbox(ApiModel):
    """Both optional, as the seed's own clients send them: without `email` the inbox gets an address on
    the operator's default domain; without `smtp` it sends through the operator's default relay."""

    email: EmailAddress | None = None
    name: HeaderText | None = Field(None, min_length=1, max_length=255)
    smtp: SmtpSettings | None = None


class Inbox(BaseModel):
    id: str
    organizationId: str
    name: str | None
    email: str
    createdAt: str
    updatedAt: str


class InboxList(RootModel[list[Inbox]]):
    """`GET /v1/inboxes` answers a bare array."""


def inbox_out(identity) -> Inbox:  # an identities row
    return Inbox(
        id=ids.render("inbox", identity["id"]),
        organizationId=ids.render("org", identity["org_id"]),
        name=identity["name"],
        email=identity["handle"],
        createdAt=iso(identity["created_at"]),
        updatedAt=iso(identity["updated_at"]),
    )
