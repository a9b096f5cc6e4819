"""Sender rules: which senders an organization refuses mail from. Pure.

Addresses are compared as receiving systems resolve them: case-insensitively, the domain without the
trailing dot of its absolute form (`blocked.test.` is `blocked.test`) and in its IDNA (ASCII) form, so
`x@BLÖCKED.test.` and `x@xn--blcked-jua.test` are the same sender to a rule."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence

import idna


def normalised(address: str) -> str:
    """An address or a domain as rules compare it: lower-cased, the domain with no trailing dot and in
    IDNA form (a domain with none is compared as written, lower-cased)."""
    local, at, domain = address.strip().rpartition("@")
    domain = domain.strip().rstrip(".").lower()
    if not domain.isascii():
        with contextlib.suppress(idna.IDNAError):
            domain = idna.encode(domain, uts46=True).decode()
    return f"{local.lower()}{at}{domain}"


def matches(pattern: str, sender: str) -> bool:
    """An address rule matches that address; a domain rule the domain and its subdomains."""
    pattern, sender = normalised(pattern), normalised(sender)
    if "@" in pattern:
        return sender == pattern
    domain = sender.rpartition("@")[2]
    return domain == pattern or domain.endswith("." + pattern)


def refusal(
    rules: Iterable[tuple[str, str]], senders: str | Sequence[str]
) -> tuple[bool, str | None, str | None]:
    """Whether one organization's rules (pattern, action) refuse mail from `senders` (the envelope
    sender; or every mailbox of the From header and the Sender header): the block rule that does
    (None when one is refused for matching no allow rule), and the sender refused. Any sender blocked,
    or any not on an allow list, refuses the message. The null sender of reports is never refused by an
    allow list (bounces must come back), only by a block rule naming it."""
    rules, senders = list(rules), [senders] if isinstance(senders, str) else list(senders)
    for sender in senders:
        if blocked := next((p for p, action in rules if action == "block" and matches(p, sender)), None):
            return True, blocked, sender
    allows = [p for p, action in rules if action == "allow"]
    for sender in senders:
        if allows and sender and not any(matches(p, sender) for p in allows):
            return True, None, sender
    return False, None, None
