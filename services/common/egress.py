"""The egress policy: every connection a tenant can aim (webhook URLs, a mailbox's SMTP relay and IMAP
host) leads only to public addresses, unless the operator allows a network
(`SENDSTREAM_EGRESS_ALLOWED_NETWORKS`).

It is checked when a destination is registered or changed (the API answers 400 naming the field), and
again at every connection, on the addresses the name resolves to then: the connection goes to an
address that passed the check (`connect`, and `GuardedResolver` for the HTTP client), so a DNS answer
that changes between check and connect cannot slip through. A password goes over a connection without
TLS only to a network the operator lists in `SENDSTREAM_EGRESS_CLEARTEXT_AUTH_NETWORKS`.

What a remote server said reaches a tenant only through `printable`: a server's words, bounded and
without control characters or undecodable bytes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


# IANA's special-purpose registries (RFC 6890 and later), whole: the standard library's tables differ
# between Python versions, and an address in any of these ranges is no public endpoint.
_SPECIAL_V4 = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.31.196.0/24", "192.52.193.0/24", "192.88.99.0/24",
    "192.168.0.0/16", "192.175.48.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
    "224.0.0.0/4", "240.0.0.0/4",
)  # fmt: skip
_SPECIAL_V6 = (
    "::/96", "::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64",
    "2001::/23", "2001:db8::/32", "2002::/16", "3fff::/20", "5f00::/16", "fc00::/7", "fe80::/10",
    "fec0::/10", "ff00::/8",
)  # fmt: skip
SPECIAL_PURPOSE: dict[int, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]] = {
    4: tuple(ipaddress.IPv4Network(n) for n in _SPECIAL_V4),
    6: tuple(ipaddress.IPv6Network(n) for n in _SPECIAL_V6),
}
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for, if it embeds one."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:a.b.c.d
    if ip.sixtofour is not None:
        return ip.sixtofour  # 2002:aabb:ccdd::/48
    if ip.teredo is not None:
        return ip.teredo[1]  # 2001::/32, the client's address
    if ip in _NAT64 or ip in _TRANSLATED or (ip in _COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


class UnsafeDestination(OSError):
    """A destination that is malformed, or leads to an address the egress policy refuses."""


class EgressRefused(UnsafeDestination):
    """A connection refused by the policy: every address of the host is one tenants may not reach."""

    def __init__(self, address: IPAddress):
        super().__init__(f"address {address} is not allowed by the egress policy")
        self.address = address


class Unresolvable(OSError):
    """A host name with no address (yet): a connection may succeed later."""


RESOLVE_TIMEOUT_S = 5.0  # a name that takes longer at the API counts as not resolving yet
HINT = "the operator can allow its network in SENDSTREAM_EGRESS_ALLOWED_NETWORKS"
CLEARTEXT_HINT = (
    "a password is sent only over TLS: use `starttls` or `tls` (the operator allows it without TLS only "
    "to the networks in SENDSTREAM_EGRESS_CLEARTEXT_AUTH_NETWORKS)"
)


@dataclass(frozen=True)
class Address:
    """One address a host resolved to, as `socket.connect` takes it."""

    ip: IPAddress
    family: socket.AddressFamily
    sockaddr: tuple


def _in(ip: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    return any(ip.version == n.version and ip in n for n in networks)


class Egress:
    def __init__(self, allowed_networks: Iterable[str] = (), cleartext_auth_networks: Iterable[str] = ()):
        self.allowed = tuple(ipaddress.ip_network(n, strict=False) for n in allowed_networks)
        self.cleartext = tuple(ipaddress.ip_network(n, strict=False) for n in cleartext_auth_networks)

    @classmethod
    def of(cls, settings: Any) -> Egress:
        """The policy a service's settings (services/common/settings.py, EgressSettings) describe."""
        return cls(settings.egress_allowed_networks, settings.egress_cleartext_auth_networks)

    def permits(self, ip: IPAddress) -> bool:
        """Public unicast addresses, and any address inside an allowed network. An IPv6 address that
        embeds an IPv4 one (mapped, compatible, translated, NAT64, 6to4, Teredo) is judged as that address."""
        ip = embedded_ipv4(ip) or ip
        if _in(ip, self.allowed):
            return True
        return ip.is_global and not ip.is_multicast and not any(ip in n for n in SPECIAL_PURPOSE[ip.version])

    def permits_cleartext_auth(self, ip: IPAddress) -> bool:
        """Whether a password may be sent to `ip` over a connection without TLS (an operator's network)."""
        return _in(embedded_ipv4(ip) or ip, self.cleartext)

    async def resolve(self, host: str, port: int) -> list[Address]:
        """Every address of `host` (an IP literal is its own), or Unresolvable."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host.removeprefix("[").removesuffix("]"), port, type=socket.SOCK_STREAM
            )
        except (OSError, UnicodeError):
            raise Unresolvable(f"{host} does not resolve") from None
        found = [Address(ipaddress.ip_address(sa[0].split("%")[0]), family, sa) for family, *_, sa in infos]
        if not found:
            raise Unresolvable(f"{host} does not resolve")
        return list({a.sockaddr: a for a in found}.values())

    async def permitted(self, host: str, port: int) -> list[Address]:
        """The addresses of `host` a connection may go to; EgressRefused if there is none."""
        found = await self.resolve(host, port)
        allowed = [a for a in found if self.permits(a.ip)]
        if not allowed:
            raise EgressRefused(found[0].ip)
        return allowed

    async def connect(self, host: str, port: int, timeout: float) -> tuple[socket.socket, IPAddress]:
        """A connected (non-blocking) TCP socket to an address of `host` the policy permits, and that
        address: resolved, checked, and connected to as checked. EgressRefused, Unresolvable, or the
        last address's OSError / TimeoutError."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            addresses = await self.permitted(host, port)
        error: BaseException | None = None
        for a in addresses:
            sock = socket.socket(a.family, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                async with asyncio.timeout(timeout):
                    await loop.sock_connect(sock, a.sockaddr)
            except (OSError, TimeoutError) as exc:
                sock.close()
                error = exc
                continue
            return sock, a.ip
        assert error is not None
        raise error

    async def check_host(self, host: str, port: int, *, password: bool = False, tls: bool = True) -> None:
        """What the API asks of a mailbox's SMTP or IMAP host: UnsafeDestination (its message completes
        the field's name) if it is, or resolves only to, addresses the policy refuses; one that does not
        resolve yet passes (it is checked again at each connection). With a `password` and no `tls`,
        every address must also be in an operator's cleartext network (a name that does not resolve
        cannot be shown to be)."""
        literal = _literal(host)
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                found = [literal] if literal else [a.ip for a in await self.resolve(host, port)]
        except (Unresolvable, TimeoutError):
            found = []
        if found and not any(self.permits(ip) for ip in found):
            where = f"{found[0]}" if literal else f"{host} resolves to {found[0]}, which"
            raise UnsafeDestination(f"{where} is not a public address ({HINT})")
        if password and not tls and (not found or not all(self.permits_cleartext_auth(ip) for ip in found)):
            raise UnsafeDestination(CLEARTEXT_HINT)

    async def check_url(self, url: str) -> None:
        """Raise UnsafeDestination unless `url` is http(s) and every address of its host is permitted."""
        if url != url.strip() or any(c.isspace() or c == "\\" or not c.isprintable() for c in url):
            raise UnsafeDestination("must not contain spaces, backslashes or control characters")
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise UnsafeDestination(f"is not a valid URL ({exc})") from None
        if parts.scheme not in ("http", "https"):
            raise UnsafeDestination("must be an http or https URL")
        host = parts.hostname
        if not host:
            raise UnsafeDestination("has no host")
        if parts.port == 0:
            raise UnsafeDestination("port 0 cannot be connected to")
        try:
            found = await self.resolve(host, port)
        except Unresolvable:
            raise UnsafeDestination(f"host {host!r} does not resolve") from None
        for a in found:
            if not self.permits(a.ip):
                raise UnsafeDestination(
                    f"host {host!r} resolves to {a.ip}, which is not a public address "
                    "(allow its network in SENDSTREAM_EGRESS_ALLOWED_NETWORKS to permit it)"
                )


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]").split("%")[0])
    except ValueError:
        return None


def printable(text: str, limit: int = 500) -> str:
    """A remote server's words as a tenant may see them: one line of printable characters (any other,
    and every byte that did not decode, becomes `?`), at most `limit` long."""
    flat = " ".join(line.strip() for line in text.splitlines())
    return "".join(c if c.isprintable() else "?" for c in flat)[:limit]


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that drops every address the egress rules refuse (and fails if none is left)."""

    def __init__(self, egress: Egress):
        self.egress = egress
        self.inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        allowed = [r for r in results if self.egress.permits(ipaddress.ip_address(r["host"]))]
        if not allowed:
            raise UnsafeDestination(f"host {host!r} resolves only to addresses the egress policy refuses")
        return allowed

    async def close(self) -> None:
        await self.inner.close()
