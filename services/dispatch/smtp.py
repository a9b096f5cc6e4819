"""Hand a message to a mailbox's SMTP relay and classify what came back (sent / soft / hard).

Connections are pooled per relay: a successful transaction leaves its connection for the next
message to the same relay; any failure discards it. Each connection goes to an address of the relay
the egress policy permits (services/common/egress.py), TLS still verifying the relay's name; a
password goes over a connection without TLS only to a network the operator allows. What the relay
said reaches the tenant only as a well-formed reply (code and printable text) or a fixed phrase.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

import aiosmtplib

from schemas.events import SmtpReply
from services.common.egress import Egress, EgressRefused, IPAddress, Unresolvable, printable

NOT_SMTP = "the relay did not answer as an SMTP server"
UNREACHABLE = "could not connect to the relay"
SILENT = "the relay did not answer in time"
HUNG_UP = "the relay closed the connection"


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


class Unreachable(Exception):
    """No connection to any permitted address of the relay (refused, unreachable, timed out)."""


class CleartextRefused(Exception):
    """The relay's password would go over a connection without TLS to an address not allowed for it."""

    def __init__(self, address: IPAddress):
        super().__init__(
            f"the relay's password is not sent without TLS to {address} (use `starttls` or `tls`, or the "
            "operator allows its network in SENDSTREAM_EGRESS_CLEARTEXT_AUTH_NETWORKS)"
        )


def reply(code: int, message: str) -> SmtpReply | None:
    """A relay's answer as the tenant sees it: a 3-digit code and printable text, or None."""
    return SmtpReply(code=code, message=printable(message)) if 200 <= code <= 599 else None


def classify(error: BaseException) -> Outcome:
    """4xx, timeouts and connection trouble are transient (soft); 5xx, a message this relay can never
    take (it lacks SMTPUTF8 for a non-ASCII address), and a relay the egress policy refuses are
    permanent (hard). The reason never carries what a server said beyond a well-formed reply."""
    if isinstance(error, EgressRefused):
        return Outcome("hard", None, f"the relay's {error}")
    if isinstance(error, CleartextRefused):
        return Outcome("hard", None, str(error))
    if isinstance(error, Unresolvable):
        return Outcome("soft", None, "the relay's host name does not resolve")
    if isinstance(error, aiosmtplib.SMTPNotSupported):
        return Outcome("hard", None, f"the relay cannot take this message: {printable(str(error), 200)}")
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        replies = [(e.code, reply(e.code, e.message)) for e in error.recipients]
        if not replies or any(r is None for _, r in replies):
            return Outcome("soft", None, NOT_SMTP)
        kind = "hard" if all(500 <= c < 600 for c, _ in replies) else "soft"
        return Outcome(kind, replies[0][1], "every recipient was refused")
    if isinstance(error, aiosmtplib.SMTPResponseException):
        if (answer := reply(error.code, error.message)) is None:
            return Outcome("soft", None, NOT_SMTP)
        kind = "hard" if 500 <= error.code < 600 else "soft"
        return Outcome(kind, answer, f"relay answered {error.code}")
    if isinstance(error, Unreachable):
        return Outcome("soft", None, UNREACHABLE)
    if isinstance(error, aiosmtplib.SMTPConnectError):  # connected, then no greeting (or no TLS) in time
        if isinstance(error.__cause__, ssl.SSLCertVerificationError):
            return Outcome(
                "soft", None, f"TLS with the relay failed ({printable(error.__cause__.reason or '', 100)})"
            )
        return Outcome("soft", None, NOT_SMTP)
    if isinstance(error, aiosmtplib.SMTPServerDisconnected):
        return Outcome("soft", None, HUNG_UP)
    if isinstance(error, TimeoutError):
        return Outcome("soft", None, SILENT)
    if isinstance(error, ssl.SSLError):
        return Outcome("soft", None, f"TLS with the relay failed ({printable(error.reason or '', 100)})")
    if isinstance(error, OSError):
        return Outcome("soft", None, UNREACHABLE)
    if isinstance(error, aiosmtplib.SMTPException):  # aiosmtplib's own words (STARTTLS or AUTH not offered)
        return Outcome("soft", None, printable(str(error), 200))
    return Outcome("soft", None, type(error).__name__)


class SmtpPool:
    """Open SMTP connections per relay, reused while fresh."""

    def __init__(
        self, *, timeout: float, transaction_timeout: float, hostname: str | None, size: int, idle_s: float,
        egress: Egress,
    ):  # fmt: skip
        # aiosmtplib would ask the resolver for the machine's name (socket.getfqdn, blocking) on every
        # connection: ask once.
        self.hostname = hostname or socket.getfqdn()
        self.timeout, self.size, self.idle_s = timeout, size, idle_s
        self.egress = egress
        self.transaction_timeout = transaction_timeout
        # Idle connections per relay, oldest first; the newest is reused first, so what a burst opened
        # beyond the steady need ages at the front and is closed after idle_s.
        self.idle: dict[Relay, list[tuple[float, aiosmtplib.SMTP]]] = defaultdict(list)
        self.busy: dict[Relay, int] = defaultdict(int)  # connections out in transactions now
        self.peak: dict[Relay, tuple[int, float]] = {}  # most in use at once lately, and since when

    async def _connect(self, relay: Relay) -> aiosmtplib.SMTP:
        """A session with the relay, over a socket to an address the egress policy permits (the host
        name stays the client's: TLS verifies the certificate against it)."""
        try:
            sock, address = await self.egress.connect(relay.host, relay.port, self.timeout)
        except (EgressRefused, Unresolvable):
            raise
        except (OSError, TimeoutError) as exc:
            raise Unreachable() from exc
        if relay.username and relay.tls == "none" and not self.egress.permits_cleartext_auth(address):
            sock.close()
            raise CleartextRefused(address)
        client = aiosmtplib.SMTP(
            hostname=relay.host,
            sock=sock,
            use_tls=relay.tls == "tls",
            start_tls=relay.tls == "starttls",
            timeout=self.timeout,
            local_hostname=self.hostname,
        )
        try:
            await client.connect()
        except BaseException:
            sock.close()
            raise
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

    def _in_use(self, relay: Relay) -> None:
        """Count one more connection in use, and remember the most used at once within idle_s."""
        self.busy[relay] += 1
        now = time.monotonic()
        peak, since = self.peak.get(relay, (0, now))
        if self.busy[relay] >= peak or now - since > self.idle_s:
            self.peak[relay] = (self.busy[relay], now)

    async def _release(self, relay: Relay, client: aiosmtplib.SMTP) -> None:
        """Keep the connection for reuse, as many per relay as were in use at once lately (at least
        `size`: several mailboxes sharing a relay each send `size` at once). Closing down to the number
        still in use as a batch finished reopened about one connection in four at a steady 100/s."""
        idle, now = self.idle[relay], time.monotonic()
        if client.is_connected:
            idle.append((now, client))
        else:
            await _close(client)
        keep = max(self.size, self.peak.get(relay, (0, now))[0])
        while idle and (len(idle) > keep or now - idle[0][0] >= self.idle_s):
            await _close(idle.pop(0)[1])

    async def deliver(
        self, relay: Relay, sender: str, recipients: list[str], data: bytes, *, smtputf8: bool = False
    ) -> Outcome:
        """One SMTP transaction, within `transaction_timeout` in all; never raises for an SMTP or network
        failure (or a relay too slow), returns its classification. `smtputf8`: the envelope holds a
        non-ASCII address, which only a relay offering SMTPUTF8 takes (hard failure otherwise)."""
        client = None
        self._in_use(relay)
        try:
            async with asyncio.timeout(self.transaction_timeout):
                client = await self._acquire(relay)
                options = ["SMTPUTF8"] if smtputf8 else None
                errors, response = await client.sendmail(sender, recipients, data, mail_options=options)
        except (aiosmtplib.SMTPException, OSError, TimeoutError, CleartextRefused, Unreachable) as exc:
            if client is not None:
                await _close(client)
            return classify(exc)
        except ValueError as exc:  # an address aiosmtplib refuses to put on the wire: no retry changes it
            if client is not None:
                await _close(client)
            return Outcome("hard", None, f"the message cannot be sent: {exc}")
        finally:
            self.busy[relay] -= 1
        await self._release(relay, client)
        refused = f"; refused: {sorted(errors)}" if errors else ""
        return Outcome("sent", SmtpReply(code=250, message=printable(response)), f"accepted{refused}")

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
