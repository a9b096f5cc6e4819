"""Which addresses an organization may use (SPEC 5a).

A tenant may take an address (an identity's handle, a pool mailbox, an inbox) only at a domain it holds:
one it proved with a DNS TXT record carrying the token it was given, or one the operator granted it; a
domain held covers its subdomains, and the most specific domain held decides. The operator's own
organization may use any domain nobody holds. At a shared domain (the default inbox domain, and any the
operator lists) anyone may take an address nobody holds. Every address belongs to one organization.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import asyncpg
import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver
import idna

from services.common.settings import IngressSettings
from services.ingress.context import Context
from services.ingress.core.errors import Conflict, Forbidden, Invalid, NotFound

RECORD_PREFIX = "_sendstream."
VALUE_PREFIX = "sendstream-verification="


def canonical(domain: str, field: str = "domain") -> str:
    """A domain as it is stored and compared: lower case, IDNA (ASCII) form, no trailing dot; Invalid
    (naming `field`) if it is no host name with at least two labels."""
    name = domain.strip().removesuffix(".").lower()
    try:
        ascii_name = idna.encode(name, uts46=True).decode() if name else ""
    except idna.IDNAError as exc:
        raise Invalid(f"{field}: {domain!r} is not a valid domain ({exc})") from None
    labels = ascii_name.split(".")
    if (
        len(labels) < 2
        or len(ascii_name) > 253
        or any(not 0 < len(label) <= 63 for label in labels)
        or labels[-1].isdigit()
    ):
        raise Invalid(f"{field}: {domain!r} is not a valid domain name (e.g. example.com)")
    return ascii_name


def domain_of(address: str) -> str:
    return canonical(address.rpartition("@")[2], "email")


def lineage(domain: str) -> list[str]:
    """The domain and each domain above it: a.b.example.com, b.example.com, example.com, com."""
    labels = domain.split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]


def is_shared(settings: IngressSettings, domain: str) -> bool:
    shared = {canonical(d) for d in settings.shared_domains}
    if settings.inbox_default_domain:
        shared.add(canonical(settings.inbox_default_domain))
    return any(d in shared for d in lineage(domain))


# The organization holding a domain: the most specific verified domain at or above it.
HOLDER = """
SELECT org_id, domain FROM domains WHERE status = 'verified' AND domain = ANY($1::text[])
 ORDER BY length(domain) DESC LIMIT 1
"""

# Another organization with a live identity handle or pool mailbox of the address.
TAKEN = """
SELECT 1 FROM identities WHERE lower(handle) = lower($1) AND deleted_at IS NULL AND org_id <> $2
UNION ALL
SELECT 1 FROM mailboxes WHERE lower(email) = lower($1) AND deleted_at IS NULL AND org_id <> $2
LIMIT 1
"""


async def claim(conn: asyncpg.Connection, settings: IngressSettings, org_id: UUID, address: str) -> None:
    """Inside the transaction that creates `address` for `org_id`: Forbidden unless the organization may
    use its domain, Conflict if another organization holds the address. Serialised per address, so two
    organizations never take one address at once.

    An address at a domain the caller does not hold is refused alike whether or not someone else holds
    it or its address: a tenant learns nothing of what others hold outside a shared domain."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(lower($1), 5))", address)
    domain = domain_of(address)
    holder = await conn.fetchrow(HOLDER, lineage(domain))
    if holder is None:
        allowed = is_shared(settings, domain) or await conn.fetchval(
            "SELECT is_operator FROM organizations WHERE id = $1", org_id
        )
    else:
        allowed = holder["org_id"] == org_id
    if not allowed:
        raise Forbidden(
            f"{address}: the domain {domain} is not verified for this organization "
            "(add it with POST /v1/domains and publish the TXT record it names)"
        )
    if await conn.fetchval(TAKEN, address, org_id):
        raise Conflict(f"{address} is already taken")


# --- the organization's domains ----------------------------------------------------------------------


async def add(c: Context, org_id: UUID, domain: str) -> tuple[asyncpg.Record, bool]:
    """The organization's claim of `domain`, pending until proven (its existing one if it made one
    before); returns it and whether it is new."""
    domain = canonical(domain)
    if is_shared(c.settings, domain):
        raise Invalid(f"domain: {domain} is shared by every organization of this server; it needs no verifying")
    row = await c.pool.fetchrow(
        """INSERT INTO domains (org_id, domain, token) VALUES ($1, $2, $3)
           ON CONFLICT (org_id, domain) DO NOTHING RETURNING *""",
        org_id, domain, secrets.token_hex(20),
    )  # fmt: skip
    if row is not None:
        return row, True
    return await find(c, org_id, domain), False


async def find(c: Context, org_id: UUID, domain: str) -> asyncpg.Record:
    try:
        domain = canonical(domain)
    except Invalid:
        raise NotFound("domain") from None
    row = await c.pool.fetchrow("SELECT * FROM domains WHERE org_id = $1 AND domain = $2", org_id, domain)
    if row is None:
        raise NotFound("domain")
    return row


async def list_domains(c: Context, org_id: UUID) -> list[asyncpg.Record]:
    return await c.pool.fetch("SELECT * FROM domains WHERE org_id = $1 ORDER BY domain", org_id)


async def remove(c: Context, org_id: UUID, domain: str) -> None:
    """The organization no longer holds the domain: it takes no new addresses there (those it has stay)."""
    row = await find(c, org_id, domain)
    await c.pool.execute("DELETE FROM domains WHERE org_id = $1 AND domain = $2", org_id, row["domain"])


async def verify(c: Context, org_id: UUID, domain: str) -> asyncpg.Record:
    """Look the domain's TXT record up: verified if it carries the token, else still pending with what the
    lookup found. Conflict if, proven, the domain (or one above it) is another organization's."""
    row = await find(c, org_id, domain)
    if row["status"] == "verified":
        return row
    expected = VALUE_PREFIX + row["token"]
    name = RECORD_PREFIX + row["domain"]
    found, problem = await txt_values(c.settings, name)
    if expected in found:
        return await _hold(c, org_id, row["domain"], "dns")
    if problem is None:
        shown = ", ".join(repr(v[:100]) for v in found[:5])
        problem = f"found TXT {shown} at {name}, none of them {expected!r}"
    return await c.pool.fetchrow(
        """UPDATE domains SET checked_at = now(), last_check = $3 WHERE org_id = $1 AND domain = $2
           RETURNING *""",
        org_id, row["domain"], problem,
    )  # fmt: skip


async def grant(c: Context, org_id: UUID, domain: str) -> asyncpg.Record:
    """The operator gives the organization a domain without DNS."""
    domain = canonical(domain)
    if is_shared(c.settings, domain):
        raise Invalid(f"domain: {domain} is shared by every organization of this server")
    if not await c.pool.fetchval("SELECT true FROM organizations WHERE id = $1", org_id):
        raise NotFound("organization")
    await c.pool.execute(
        """INSERT INTO domains (org_id, domain, token) VALUES ($1, $2, $3)
           ON CONFLICT (org_id, domain) DO NOTHING""",
        org_id, domain, secrets.token_hex(20),
    )  # fmt: skip
    return await _hold(c, org_id, domain, "operator")


async def _hold(c: Context, org_id: UUID, domain: str, by: str) -> asyncpg.Record:
    async with c.pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 6))", "domains")
        holder = await conn.fetchrow(HOLDER, lineage(domain))
        if holder is not None and holder["org_id"] != org_id:
            raise Conflict(f"{domain} is held by another organization ({holder['domain']})")
        return await conn.fetchrow(
            """UPDATE domains SET status = 'verified', verified_by = $3, verified_at = $4, checked_at = $4,
                      last_check = NULL
                WHERE org_id = $1 AND domain = $2 RETURNING *""",
            org_id, domain, by, datetime.now(UTC),
        )  # fmt: skip


async def txt_values(settings: IngressSettings, name: str) -> tuple[list[str], str | None]:
    """The TXT values at `name` (each record's strings joined), or none and what went wrong."""
    try:
        resolver = dns.asyncresolver.Resolver(configure=not settings.dns_nameservers)
    except dns.resolver.NoResolverConfiguration:
        return [], "this server has no DNS resolver configured (SENDSTREAM_DNS_NAMESERVERS)"
    if settings.dns_nameservers:
        resolver.nameservers = [_nameserver(s) for s in settings.dns_nameservers]
    resolver.lifetime = settings.dns_timeout_s
    try:
        answer = await resolver.resolve(name, "TXT", search=False)
    except dns.resolver.NXDOMAIN:
        return [], f"{name} does not exist in DNS (NXDOMAIN)"
    except dns.resolver.NoAnswer:
        return [], f"{name} has no TXT record"
    except dns.exception.Timeout:
        return [], f"DNS did not answer for {name} within {settings.dns_timeout_s:g} s; try again"
    except dns.resolver.NoNameservers:
        return [], f"no DNS server could answer for {name} (SERVFAIL); try again"
    except dns.exception.DNSException as exc:
        return [], f"the DNS lookup of {name} failed: {type(exc).__name__}"
    return [b"".join(r.strings).decode(errors="replace") for r in answer], None


def _nameserver(spec: str) -> dns.nameserver.Do53Nameserver:
    """A resolver given as `ip`, `ip:port` or `[ipv6]:port`."""
    if spec.startswith("["):
        host, _, port = spec[1:].partition("]")
        port = port.removeprefix(":")
    elif spec.count(":") == 1:
        host, _, port = spec.partition(":")
    else:
        host, port = spec, ""
    return dns.nameserver.Do53Nameserver(host, int(port or 53))


# --- addresses held against the rule (data from before it) -------------------------------------------

HOLDINGS = """
SELECT lower(handle) AS address, org_id, min(created_at) AS since FROM identities
 WHERE deleted_at IS NULL GROUP BY 1, 2
UNION ALL
SELECT lower(email), org_id, min(created_at) FROM mailboxes WHERE deleted_at IS NULL GROUP BY 1, 2
"""


@dataclass(frozen=True)
class Held:
    """An address held against the rule: by several organizations (the first receives its mail), or at a
    domain another organization verified."""

    address: str
    holders: list[tuple[UUID, datetime]]  # organization, since when; first come first
    domain_holder: UUID | None


async def conflicts(conn: asyncpg.Connection) -> list[Held]:
    """Every address held by more than one organization, or by one that does not hold its domain while
    another organization does."""
    verified = {r["domain"]: r["org_id"] for r in await conn.fetch(
        "SELECT domain, org_id FROM domains WHERE status = 'verified'"
    )}  # fmt: skip
    holders: dict[str, dict[UUID, datetime]] = {}
    for r in await conn.fetch(HOLDINGS):
        orgs = holders.setdefault(r["address"], {})
        orgs[r["org_id"]] = min(orgs.get(r["org_id"], r["since"]), r["since"])
    found = []
    for address, orgs in sorted(holders.items()):
        try:
            domain = domain_of(address)
        except Invalid:
            domain = address.rpartition("@")[2]
        domain_holder = next((verified[d] for d in lineage(domain) if d in verified), None)
        if len(orgs) > 1 or (domain_holder is not None and set(orgs) != {domain_holder}):
            found.append(Held(address, sorted(orgs.items(), key=lambda o: o[1]), domain_holder))
    return found
