"""A mailbox's SMTP relay and IMAP host, checked against the egress policy when they are set or changed
(services/common/egress.py): 400 naming the field. Each connection is checked again when it is made."""

from __future__ import annotations

from typing import Any

from services.common.egress import Egress, UnsafeDestination
from services.ingress.context import Context
from services.ingress.http import ApiError


async def check_server(c: Context, field: str, host: str, port: int, tls: str, *, password: bool) -> None:
    """One server (`field`: `smtp` or `imap`): its host may lead only where the policy permits, and a
    `password` goes without TLS only to a network the operator allows for it."""
    egress = Egress.of(c.settings)
    try:
        await egress.check_host(host, port)
    except UnsafeDestination as exc:
        raise ApiError(400, "invalid_request", f"{field}.host: {exc}") from None
    try:
        await egress.check_host(host, port, password=password, tls=tls != "none")
    except UnsafeDestination as exc:
        raise ApiError(400, "invalid_request", f"{field}.tls: {exc}") from None


async def check_account(c: Context, smtp: Any = None, imap: Any = None) -> None:
    """A new mailbox's `smtp` and `imap` settings (the API's models; None: not given)."""
    if smtp is not None:
        await check_server(
            c, "smtp", smtp.host, smtp.port, smtp.tls, password=bool(smtp.username or smtp.password)
        )
    if imap is not None:
        await check_server(c, "imap", imap.host, imap.port, imap.tls, password=True)
