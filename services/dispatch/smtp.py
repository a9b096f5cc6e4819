"""Hand a message to a mailbox's SMTP relay and classify what came back (sent / soft / hard).

Connections are pooled per relay: a successful transaction leaves its connection for the next
message to the same relay; any failure discards it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
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
    """4xx, timeouts and connection trouble are transient (soft); 5xx, and a message this relay can
    never take (it lacks SMTPUTF8 for a non-ASCII address), are permanent (hard)."""
    if isinstance(error, aiosmtplib.SMTPNotSupported):
        return Outcome("hard", None, f"the relay cannot take this message: {error}")
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        codes = [e.code for e in error.recipients]
        kind = "hard" if codes and all(500 <= c < 600 for c in codes) else "soft"
        first = error.recipients[0] if error.recipients else None
        reply = SmtpReply(code=first.code, message=first.message) if first else None
        return Outcome(kind, reply, "every recipient was refused")
    if isinstance(error, aiosmtplib.SMTPResponseException) and error.code > 0:
        kind = "hard" if 500 <= error.code < 600 else "soft"
        return Outcome(
            kind, SmtpReply(code=error.code, message=error.message), f"relay answered {error.code}"
        )
    return Outcome("soft", None, f"{type(error).__name__}: {error}")


class SmtpPool:
    """Open SMTP connections per relay, reused while fresh."""

    def __init__(
        self, *, timeout: float, transaction_timeout: float, hostname: str | None, size: int, idle_s: float
    ):
        self.timeout, self.hostname, self.size, self.idle_s = timeout, hostname, size, idle_s
        self.transaction_timeout = transaction_timeout
        self.idle: dict[Relay, list[tuple[float, aiosmtplib.SMTP]]] = defaultdict(list)

    async def _connect(self, relay: Relay) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=relay.host,
            port=relay.port,
            use_tls=relay.tls == "tls",
            start_tls=relay.tls == "starttls",
            timeout=self.timeout,
            local_hostname=self.hostname,
        )
        await client.connect()
        if relay.username:
            await client.login(relay.username, relay.password or "")
        return client

    async def _acquire(self, relay: Relay) -> aiosmtplib.SMTP:
        idle = self.idle[relay]
        while idle:
            since, client = idle.pop()
            if client.is_connected and time.monotonic() - since < self.idle_s:
                return client
            await _close(client)
        return await self._connect(relay)

    async def _release(self, relay: Relay, client: aiosmtplib.SMTP) -> None:
        if client.is_connected and len(self.idle[relay]) < self.size:
            self.idle[relay].append((time.monotonic(), client))
        else:
            await _close(client)

    async def deliver(
        self, relay: Relay, sender: str, recipients: list[str], data: bytes, *, smtputf8: bool = False
    ) -> Outcome:
        """One SMTP transaction, within `transaction_timeout` in all; never raises for an SMTP or network
        failure (or a relay too slow), returns its classification. `smtputf8`: the envelope holds a
        non-ASCII address, which only a relay offering SMTPUTF8 takes (hard failure otherwise)."""
        client = None
        try:
            async with asyncio.timeout(self.transaction_timeout):
                client = await self._acquire(relay)
                options = ["SMTPUTF8"] if smtputf8 else None
                errors, response = await client.sendmail(sender, recipients, data, mail_options=options)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            if client is not None:
                await _close(client)
            return classify(exc)
        except ValueError as exc:  # an address aiosmtplib refuses to put on the wire: no retry changes it
            if client is not None:
                await _close(client)
            return Outcome("hard", None, f"the message cannot be sent: {exc}")
        await self._release(relay, client)
        refused = f"; refused: {sorted(errors)}" if errors else ""
        return Outcome("sent", SmtpReply(code=250, message=response), f"accepted{refused}")

    async def close(self) -> None:
        for idle in self.idle.values():
            for _, client in idle:
                await _close(client)
        self.idle.clear()


async def _close(client: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(Exception):
        if client.is_connected:
            await client.quit()
    with contextlib.suppress(Exception):
        client.close()
