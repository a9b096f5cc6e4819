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


class UnsafeDestination(OSError):
    """A URL that is malformed, or leads to an address webhooks may not reach."""


class Egress:
    def __init__(self, allowed_networks: Iterable[str] = ()):
        self.allowed = tuple(ipaddress.ip_network(n, strict=False) for n in allowed_networks)

    def permits(self, ip: IPAddress) -> bool:
        """Public unicast addresses, and any address inside an allowed network."""
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if any(ip.version == n.version and ip in n for n in self.allowed):
            return True
        return ip.is_global and not ip.is_multicast

    async def check_url(self, url: str) -> None:
        """Raise UnsafeDestination unless `url` is http(s) and every address of its host is permitted."""
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
