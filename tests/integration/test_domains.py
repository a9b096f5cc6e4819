"""Addresses belong to one organization, at domains it proved (SPEC 5a), on the real stack: one tenant can
neither take another's addresses nor learn which it holds; a domain is proven by a TXT record looked up
through a real DNS exchange (the tests' own server); the operator grants domains; mail to an address
reaches only the organization holding it; addresses held by several from before are listed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from email.message import EmailMessage

import asyncpg
import pytest

from schemas import ids
from tests.conftest import Api, Relay, deliver, eventually, new_org
from tests.dnsserver import DnsServer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def own_domain() -> str:
    """A domain nobody holds and the test stack does not share."""
    return f"acme-{uuid.uuid4().hex[:8]}.test"


async def org_id_of(api: Api) -> str:
    _, org, _ = await api.call("GET", "/v1/organization")
    return org["id"]


async def holding(operator: Api, api: Api, domain: str) -> None:
    """The operator grants `api`'s organization `domain`."""
    status, body, _ = await operator.call(
        "POST", f"/v1/organizations/{await org_id_of(api)}/domains", {"domain": domain}
    )
    assert status == 201 and body["status"] == "verified" and body["verifiedBy"] == "operator", body


async def test_a_domain_is_verified_by_its_txt_record_through_dns(api: Api, dns_server: DnsServer) -> None:
    """POST /v1/domains names the TXT record; verify says what it found until the record is there, then
    the domain is verified and the organization takes addresses at it and its subdomains."""
    domain = own_domain()
    status, body, _ = await api.call("POST", "/v1/identities", {"handle": f"agent@{domain}"})
    assert status == 403 and f"domain {domain} is not verified" in body["error"]["message"], body

    status, added, _ = await api.call("POST", "/v1/domains", {"domain": domain.upper() + "."})
    assert status == 201, added
    record = added["record"]
    assert added["domain"] == domain and added["status"] == "pending" and added["verifiedBy"] is None
    assert record["type"] == "TXT" and record["name"] == f"_sendstream.{domain}"
    assert record["value"].startswith("sendstream-verification=") and len(record["value"]) > 40

    status, checked, _ = await api.call("POST", f"/v1/domains/{domain}/verify")
    assert status == 200 and checked["status"] == "pending", checked
    assert "does not exist in DNS" in checked["lastCheck"]["result"], checked

    dns_server.records[record["name"]] = ["v=spf1 -all", "sendstream-verification=wrong"]
    _, checked, _ = await api.call("POST", f"/v1/domains/{domain}/verify")
    assert checked["status"] == "pending" and "sendstream-verification=wrong" in checked["lastCheck"]["result"]

    dns_server.records[record["name"]] = ["v=spf1 -all", record["value"]]
    status, verified, _ = await api.call("POST", f"/v1/domains/{domain}/verify")
    assert status == 200 and verified["status"] == "verified" and verified["verifiedBy"] == "dns", verified
    assert verified["lastCheck"] is None and verified["verifiedAt"]

    status, again, _ = await api.call("POST", "/v1/domains", {"domain": domain})
    assert status == 200 and again["status"] == "verified"
    _, listed, _ = await api.call("GET", "/v1/domains")
    assert [d["domain"] for d in listed["data"]] == [domain]

    status, body, _ = await api.call("POST", "/v1/identities", {"handle": f"agent@{domain}"})
    assert status == 201, body
    status, body, _ = await api.call("POST", "/v1/identities", {"handle": f"agent@mail.{domain}"})
    assert status == 201, body


async def test_a_verified_domain_is_one_organizations(operator: Api, dns_server: DnsServer) -> None:
    """Another organization that adds the same domain and publishes its own token is refused (409) once it
    is proven; its subdomain likewise; the holder giving it up frees it for new addresses only."""
    a, b = await new_org(operator), await new_org(operator)
    domain = own_domain()
    await holding(operator, a, domain)
    status, body, _ = await a.call("POST", "/v1/identities", {"handle": f"sales@{domain}"})
    assert status == 201, body

    for claimed in (domain, f"eu.{domain}"):
        status, added, _ = await b.call("POST", "/v1/domains", {"domain": claimed})
        assert status == 201 and added["status"] == "pending"
        dns_server.records[added["record"]["name"]] = [added["record"]["value"]]
        status, body, _ = await b.call("POST", f"/v1/domains/{claimed}/verify")
        assert status == 409 and "held by another organization" in body["error"]["message"], body
        status, body, _ = await b.call("POST", "/v1/identities", {"handle": f"ops@{claimed}"})
        assert status == 403, body

    status, _, _ = await a.call("DELETE", f"/v1/domains/{domain}")
    assert status == 204
    status, body, _ = await a.call("GET", f"/v1/domains/{domain}")
    assert status == 404
    status, body, _ = await b.call("POST", f"/v1/domains/{domain}/verify")
    assert status == 200 and body["status"] == "verified", body
    status, body, _ = await b.call("POST", "/v1/identities", {"handle": f"sales@{domain}"})
    assert status == 409 and body["error"]["message"] == f"sales@{domain} is already taken", body
    status, body, _ = await b.call("POST", "/v1/identities", {"handle": f"ops@{domain}"})
    assert status == 201, body


async def test_a_tenant_cannot_take_another_tenants_addresses_nor_learn_of_them(
    operator: Api, relay: Relay, inbound: int, db: asyncpg.Pool
) -> None:
    """Finding 1: B adding A's pool address or A's inbox address to its own pool (or as a handle, an inbox,
    a mailbox) is refused, with the same answer as an address nobody holds; mail to A's addresses reaches A
    alone, and B cannot send as them."""
    a, b = await new_org(operator), await new_org(operator)
    domain = own_domain()
    await holding(operator, a, domain)
    handle, pool_address, inbox_address = (f"{n}@{domain}" for n in ("agent", "shared", "ainbox"))
    assert (await a.call("POST", "/v1/identities", {"handle": handle}))[0] == 201
    status, body, _ = await a.call(
        "POST", f"/v1/identities/{handle}/mailboxes", {"email": pool_address, "smtp": relay.smtp_settings()}
    )
    assert status == 201, body
    status, inbox, _ = await a.call("POST", "/v1/inboxes", {"email": inbox_address, "smtp": relay.smtp_settings()})
    assert status == 201, inbox

    b_handle = f"agent-{uuid.uuid4().hex[:6]}@example.test"  # a shared domain: B may be there
    assert (await b.call("POST", "/v1/identities", {"handle": b_handle}))[0] == 201
    nobody = f"nobody-{uuid.uuid4().hex[:6]}@{domain}"
    answers = {}
    for address in (pool_address, inbox_address, handle, nobody):
        attempts = {
            "pool": await b.call("POST", f"/v1/identities/{b_handle}/mailboxes",
                                 {"email": address, "smtp": relay.smtp_settings()}),
            "identity": await b.call("POST", "/v1/identities", {"handle": address}),
            "inbox": await b.call("POST", "/v1/inboxes", {"email": address, "smtp": relay.smtp_settings()}),
            "mailbox": await b.call("POST", "/mailboxes", {"email_address": address, "smtp": relay.smtp_settings()}),
        }  # fmt: skip
        for route, (status, body, _) in attempts.items():
            assert status == 403, (address, route, body)
        answers[address] = json.dumps(attempts["identity"][1]).replace(address, "ADDRESS")
    assert len(set(answers.values())) == 1, answers  # held or not, the same words: nothing learned

    # The operator's own organization may use any domain nobody else holds, but not A's.
    status, body, _ = await operator.call("POST", "/v1/identities", {"handle": f"op-{uuid.uuid4().hex[:6]}@{domain}"})
    assert status == 403, body

    # Mail to A's pool address is A's alone.
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "Pat <pat@client.example.test>", pool_address, "For A only"
    mail.set_content("private")
    await deliver(inbound, mail, "pat@client.example.test", [pool_address])
    await eventually(lambda: db.fetchval("SELECT count(*) FROM messages WHERE subject = 'For A only'"))
    await asyncio.sleep(0.5)
    rows = await db.fetch("SELECT org_id FROM messages WHERE subject = 'For A only'")
    assert {ids.render("org", r["org_id"]) for r in rows} == {await org_id_of(a)}


async def test_two_organizations_taking_one_free_address_at_once_get_it_once(operator: Api) -> None:
    """At a shared domain, concurrent claims of one address by several organizations: exactly one wins."""
    orgs = [await new_org(operator) for _ in range(6)]
    address = f"popular-{uuid.uuid4().hex[:6]}@example.test"
    results = await asyncio.gather(*(o.call("POST", "/v1/identities", {"handle": address}) for o in orgs[:3]),
                                   *(o.call("POST", "/v1/inboxes", {"email": address}) for o in orgs[3:]))  # fmt: skip
    statuses = sorted(r[0] for r in results)
    assert statuses.count(201) == 1 and statuses.count(409) == 5, statuses


async def test_granting_domains_is_for_operator_keys_and_a_shared_domain_needs_none(
    operator: Api, api: Api
) -> None:
    """A tenant cannot grant itself a domain; the shared inbox domain cannot be claimed, and inboxes
    created there without `email` need no domain."""
    status, body, _ = await api.call("POST", f"/v1/organizations/{await org_id_of(api)}/domains", {"domain": own_domain()})
    assert status == 403, body
    status, body, _ = await api.call("POST", "/v1/domains", {"domain": "inboxes.example.test"})
    assert status == 400 and "shared" in body["error"]["message"], body
    for bad in ("localhost", "a..b", "-.test", "10.0.0.1", "x" * 64 + ".test"):
        status, body, _ = await api.call("POST", "/v1/domains", {"domain": bad})
        assert status == 400 and body["error"]["message"].startswith("domain:"), (bad, body)
    status, body, _ = await api.call("POST", "/v1/inboxes", {"name": "Support"})
    assert status == 201 and body["email"].endswith("@inboxes.example.test"), body
    status, body, _ = await operator.call("POST", "/v1/organizations/org_00000000000000000000000000000000/domains",
                                          {"domain": own_domain()})  # fmt: skip
    assert status == 404, body


async def test_addresses_held_by_several_from_before_are_listed_and_mail_reaches_the_first(
    operator: Api, relay: Relay, inbound: int, db: asyncpg.Pool, service_env: dict[str, str]
) -> None:
    """Data from before the rule: an address in two organizations' pools receives mail in the first only,
    and `sendstream addresses conflicts` lists it (exit status 1)."""
    a, b = await new_org(operator), await new_org(operator)
    address = f"old-{uuid.uuid4().hex[:6]}@example.test"
    handles = []
    for org in (a, b):
        handle = f"agent-{uuid.uuid4().hex[:6]}@example.test"
        assert (await org.call("POST", "/v1/identities", {"handle": handle}))[0] == 201
        handles.append(handle)
    status, body, _ = await a.call(
        "POST", f"/v1/identities/{handles[0]}/mailboxes", {"email": address, "smtp": relay.smtp_settings()}
    )
    assert status == 201, body
    status, body, _ = await b.call(
        "POST", f"/v1/identities/{handles[1]}/mailboxes", {"email": address, "smtp": relay.smtp_settings()}
    )
    assert status == 409, body
    # As the data of an earlier version could hold it: B's pool got the address too.
    b_org = ids.parse("org", await org_id_of(b))
    await db.execute(
        """INSERT INTO mailboxes (id, org_id, identity_id, email, smtp_host, smtp_port, smtp_tls, hourly_limit)
           SELECT $1, org_id, id, $2, '127.0.0.1', 25, 'none', 600 FROM identities WHERE lower(handle) = $3""",
        uuid.uuid4(), address, handles[1],
    )  # fmt: skip

    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "pat@client.example.test", address, f"old {address}"
    mail.set_content("to the first holder")
    await deliver(inbound, mail, "pat@client.example.test", [address])
    await eventually(lambda: db.fetchval("SELECT count(*) FROM messages WHERE subject = $1", f"old {address}"))
    await asyncio.sleep(0.5)
    orgs = {r["org_id"] for r in await db.fetch("SELECT org_id FROM messages WHERE subject = $1", f"old {address}")}
    assert orgs == {ids.parse("org", await org_id_of(a))}

    env = {**os.environ, "DATABASE_URL": service_env["DATABASE_URL"]}
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "services.cli", "addresses", "conflicts", "--json"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    listed = [json.loads(line) for line in done.stdout.splitlines()]
    [mine] = [c for c in listed if c["address"] == address]
    assert [h["org"] for h in mine["holders"]] == [await org_id_of(a), ids.render("org", b_org)]
