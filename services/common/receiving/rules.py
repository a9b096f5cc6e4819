"""Sender rules: which senders an organization refuses mail from. Pure."""

from __future__ import annotations

from collections.abc import Iterable


def matches(pattern: str, sender: str) -> bool:
    """An address rule matches that address; a domain rule the domain and its subdomains."""
    sender = sender.lower()
    if "@" in pattern:
        return sender == pattern
    domain = sender.rpartition("@")[2]
    return domain == pattern or domain.endswith("." + pattern)


def refusal(rules: Iterable[tuple[str, str]], sender: str) -> tuple[bool, str | None]:
    """Whether one organization's rules (pattern, action) refuse `sender`, and the block rule that does
    (None when it is refused for matching no allow rule). The null sender of reports is never refused
    by an allow list (bounces must come back), only by a block rule naming it."""
    rules = list(rules)
    if blocked := next((p for p, action in rules if action == "block" and matches(p, sender)), None):
        return True, blocked
    allows = [p for p, action in rules if action == "allow"]
    if allows and sender and not any(matches(p, sender) for p in allows):
        return True, None
    return False, None
