"""The SSRF guard: webhook URLs may only lead to public addresses, unless the operator allows a network.

Checked when an endpoint is registered or changed, and again on every delivery: the URL's host is
resolved and every address it resolves to must be allowed. The HTTP client resolves through
`GuardedResolver`, so the address it connects to is one that passed the check (a DNS answer that
changes between check and connect cannot slip through), and redirects are never followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


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
    """A URL that is malformed, or leads to an address webhooks may not reach."""


class Egress:
    def __init__(self, allowed_networks: Iterable[str] = ()):
        self.allowed = tuple(ipaddress.ip_network(n, strict=False) for n in allowed_networks)

    def permits(self, ip: IPAddress) -> bool:
        """Public unicast addresses, and any address inside an allowed network. An IPv6 address that
        embeds an IPv4 one (mapped, compatible, translated, NAT64, 6to4, Teredo) is judged as that address."""
        ip = embedded_ipv4(ip) or ip
        if any(ip.version == n.version and ip in n for n in self.allowed):
            return True
        return ip.is_global and not ip.is_multicast and not any(ip in n for n in SPECIAL_PURPOSE[ip.version])

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
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            raise UnsafeDestination(f"host {host!r} does not resolve") from None
        for *_, sockaddr in infos:
            ip = ipaddress.ip_address(sockaddr[0].split("%")[0])
            if not self.permits(ip):
                raise UnsafeDestination(
                    f"host {host!r} resolves to {ip}, which is not a public address "
                    "(allow its network in SENDSTREAM_WEBHOOK_ALLOWED_NETWORKS to permit it)"
                )


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
            raise UnsafeDestination(f"host {host!r} resolves only to addresses webhooks may not reach")
        return allowed

    async def close(self) -> None:
        await self.inner.close()
