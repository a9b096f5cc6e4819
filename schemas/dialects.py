"""The API dialects sendstream speaks: one line each. A dialect is its schema module
(`schemas/api/<name>.py`, with its `DIALECT`) and its routes module (`services/ingress/routes/<name>.py`,
loaded by the ingress for every dialect listed here); see schemas/dialect.py for what the rest of
sendstream asks of it."""

from __future__ import annotations

from schemas.api import agentmail, identities, inboxes, mailboxes
from schemas.dialect import ORIGINAL, Dialect

REGISTERED: dict[str, Dialect] = {
    d.name: d
    for d in (
        identities.DIALECT,
        inboxes.DIALECT,
        mailboxes.DIALECT,
        agentmail.DIALECT,
    )
}


def of(name: str | None) -> Dialect:
    """The dialect of this name; the first one for events that name none, or one this version does not
    know (written by a newer one: its messages are shown as the first dialect shows them)."""
    return REGISTERED.get(name or ORIGINAL) or REGISTERED[ORIGINAL]
