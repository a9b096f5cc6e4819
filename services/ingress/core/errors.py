"""What the core raises for a dialect to word: the HTTP layer turns it into that dialect's error."""

from __future__ import annotations


class NotFound(Exception):
    """Something a request names does not exist or is another organization's: 404 in every dialect,
    worded with the dialect's noun for `kind` (the identities dialect: "Identity not found")."""

    def __init__(self, kind: str):
        super().__init__(f"{kind} not found")
        self.kind = kind


class Conflict(Exception):
    """What a request would create exists already (a handle, an address in a pool): 409."""
