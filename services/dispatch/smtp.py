"""Hand a message to a mailbox's SMTP relay and classify what came back (Sent / SoftFail / HardFail)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import aiosmtplib

from schemas.events import SmtpReply


@dataclass(frozen=True)
class Relay:
    host: str
    port: int
    tls: Literal["none", "starttls", "tls"]
    username: str | None
    password: str | None

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Outcome:
    kind: Literal["sent", "soft", "hard"]
    reply: SmtpReply | None
    reason: str


def classify(error: BaseException) -> Outcome:
    """4xx, timeouts and connection trouble are transient; 5xx is permanent."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        codes = [e.code for e in error.recipients]
        kind = "hard" if codes and all(500 <= c < 600 for c in codes) else "soft"
        first = error.recipients[0] if error.recipients else None
        reply = SmtpReply(code=first.code, message=first.message) if first else None
        return Outcome(kind, reply, "every recipient was refused")
    if isinstance(error, aiosmtplib.SMTPResponseException):
        kind = "hard" if 500 <= error.code < 600 else "soft"
        return Outcome(
            kind, SmtpReply(code=error.code, message=error.message), f"relay answered {error.code}"
        )
    return Outcome("soft", None, f"{type(error).__name__}: {error}")


async def deliver(
    relay: Relay, sender: str, recipients: list[str], data: bytes, *, timeout: float, hostname: str | None
) -> Outcome:
    """One SMTP transaction; never raises for an SMTP or network failure, returns its classification."""
    try:
        errors, response = await aiosmtplib.send(
            data,
            sender=sender,
            recipients=recipients,
            hostname=relay.host,
            port=relay.port,
            use_tls=relay.tls == "tls",
            start_tls=relay.tls == "starttls",
            username=relay.username,
            password=relay.password,
            timeout=timeout,
            local_hostname=hostname,
        )
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        return classify(exc)
    return Outcome(
        "sent",
        SmtpReply(code=250, message=response),
        "accepted" if not errors else f"refused: {sorted(errors)}",
    )
