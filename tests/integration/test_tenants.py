"""`sendstream tenant delete` on the real stack: one command removes every row of an organization, its
archive and the blobs only it refers to; another organization's data, shared blobs and chains stay."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid

import asyncpg
import pytest

from schemas import ids
from services.common.domain.blobs import PostgresBlobs
from services.tenants import ERASED
from tests.conftest import Api, Receiver, Relay, deliver, eventually, new_org
from tests.integration.test_archive import sendstream
from tests.integration.test_attachments import new_inbox, send_body, upload
from tests.integration.test_inbound import reply_to

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

SHARED = b"%PDF-1.7\nthe same price list\n" + os.urandom(2000)
OWN = b"%PDF-1.7\na contract of its own\n" + os.urandom(2000)
PENDING = b"%PDF-1.7\nthe same brochure\n" + os.urandom(2000)  # another organization's, not yet on the log


async def busy_org(api: Api, relay: Relay, receiver: Receiver, inbound: int) -> dict:
    """An organization with a bit of everything: a sent message with files, a received reply, a webhook,
    a suppression, a sender rule."""
    await api.call("POST", "/v1/webhooks", {"url": receiver.url("/gone"), "events": ["message.sent"]})
    assert (await api.call("POST", "/v1/suppressions", {"address": "nomore@example.test"}))[0] == 201
    assert (await api.call("POST", "/v1/sender-rules", {"pattern": "example.test", "action": "allow"}))[
        0
    ] == 201
    inbox = await new_inbox(api, relay)
    files = [upload("prices.pdf", SHARED, "application/pdf"), upload("contract.pdf", OWN, "application/pdf"),
             upload("brochure.pdf", PENDING, "application/pdf")]  # fmt: skip
    status, sent, _ = await api.call("POST", f"/v1/inboxes/{inbox['id']}/messages/send", send_body(*files))
    assert status == 200, sent
    [original] = await relay.wait_for(1)
    await deliver(inbound, reply_to(original.message, "ana@example.test", inbox["email"], "Signed."),
                  "ana@example.test", [inbox["email"]])  # fmt: skip

    async def settled() -> list | None:
        _, listed, _ = await api.call("GET", f"/v1/inboxes/{inbox['id']}/messages")
        return listed if {m["status"] for m in listed} == {"sent", "received"} else None

    await eventually(settled, timeout=20)
    return inbox


async def naming_columns(db: asyncpg.Pool) -> list[tuple[str, str]]:
    """Every (table, column) of the schema naming an organization, an identity or a mailbox."""
    rows = await db.fetch(
        """SELECT c.relname, a.attname FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
              AND NOT a.attisdropped AND a.attname IN ('org_id', 'identity_id', 'mailbox_id')"""
    )
    return [(r["relname"], r["attname"]) for r in rows]


async def holdings(db: asyncpg.Pool, org_id: uuid.UUID, identity_ids: list, mailbox_ids: list) -> dict:
    """Every row anywhere that is the organization's: by a column naming it, its identities or mailboxes,
    or an event of it kept by a consumer."""
    by = {"org_id": [org_id], "identity_id": identity_ids, "mailbox_id": mailbox_ids}
    found = {}
    for table, column in await naming_columns(db):
        n = await db.fetchval(f"SELECT count(*) FROM {table} WHERE {column} = ANY($1::uuid[])", by[column])
        if n:
            found[f"{table}.{column}"] = n
    if await db.fetchval("SELECT count(*) FROM organizations WHERE id = $1", org_id):
        found["organizations"] = 1
    for table in ("timers", "redrives"):
        if n := await db.fetchval(
            f"SELECT count(*) FROM {table} WHERE event->>'org_id' = $1::uuid::text", org_id
        ):
            found[table] = n
    return found


async def test_one_command_deletes_an_organizations_data_archive_and_own_blobs_and_nothing_else(
    api: Api, operator: Api, relay: Relay, receiver: Receiver, inbound: int, db: asyncpg.Pool,
    service_env: dict,
) -> None:  # fmt: skip
    inbox = await busy_org(api, relay, receiver, inbound)
    org_id = await db.fetchval("SELECT org_id FROM identities WHERE id = $1", ids.parse("inbox", inbox["id"]))
    other = await new_org(operator)
    other_inbox = await new_inbox(other, relay)
    status, kept, _ = await other.call("POST", f"/v1/inboxes/{other_inbox['id']}/messages/send",
                                       send_body(upload("prices.pdf", SHARED, "application/pdf")))  # fmt: skip
    assert status == 200, kept
    other_org = await db.fetchval(
        "SELECT org_id FROM identities WHERE id = $1", ids.parse("inbox", other_inbox["id"])
    )
    # The other organization has just put the brochure too, its send not yet on the log (as between an
    # upload's put and its request's publication): neither the views nor the archive know of it.
    await PostgresBlobs(db).put(PENDING, "application/pdf", [other_org])
    identity_ids = [r["id"] for r in await db.fetch("SELECT id FROM identities WHERE org_id = $1", org_id)]
    mailbox_ids = [r["id"] for r in await db.fetch("SELECT id FROM mailboxes WHERE org_id = $1", org_id)]
    event_ids = [
        r["event_id"] for r in await db.fetch("SELECT event_id FROM event_archive WHERE org_id = $1", org_id)
    ]
    raw = await db.fetch(
        "SELECT raw_sha256 FROM messages WHERE org_id = $1 AND raw_sha256 IS NOT NULL", org_id
    )
    own_blobs = [hashlib.sha256(OWN).digest(), *(bytes.fromhex(r["raw_sha256"]) for r in raw)]
    assert len(own_blobs) == 3  # the contract, the raw message sent and the raw reply received
    assert await db.fetchval("SELECT count(*) FROM blobs WHERE sha256 = ANY($1)", own_blobs) == 3
    before = await holdings(db, org_id, identity_ids, mailbox_ids)
    assert {"messages.org_id", "event_archive.org_id", "webhook_endpoints.org_id", "suppressions.org_id",
            "affinity.identity_id", "identities.org_id", "organizations"} <= before.keys()  # fmt: skip

    # asked to confirm, with no one to answer: nothing happens
    code, out = await sendstream(service_env, "tenant", "delete", ids.render("org", org_id))
    assert code == 1, out
    still = await holdings(db, org_id, identity_ids, mailbox_ids)  # (its events may still be arriving)
    lasting = before.keys() - {"timers", "redrives"}  # (a timer that fires in between is gone on its own)
    assert "2 messages" in out and lasting <= still.keys() and still["messages.org_id"] == 2
    assert (await api.call("GET", "/v1/inboxes"))[0] == 200

    code, out = await sendstream(
        service_env, "tenant", "delete", ids.render("org", org_id), "--yes", "--quiet", "1"
    )
    assert code == 0, out
    assert "organization deleted" in out and "Kafka" in out, out
    assert "blobs: 3 deleted, 2 kept" in out, out

    assert await holdings(db, org_id, identity_ids, mailbox_ids) == {}
    assert await db.fetchval("SELECT count(*) FROM processed_events WHERE event_id = ANY($1)", event_ids) == 0
    assert await db.fetchval("SELECT count(*) FROM blobs WHERE sha256 = ANY($1)", own_blobs) == 0
    assert (await api.call("GET", "/v1/inboxes"))[0] == 401

    # the other organization keeps its message, its copy of the shared file and an intact chain
    status, message, _ = await other.call("GET", f"/v1/inboxes/{other_inbox['id']}/messages/{kept['id']}")
    assert status == 200 and [base64.b64decode(a["content"]) for a in message["attachments"]] == [SHARED]
    assert await PostgresBlobs(db).get(hashlib.sha256(PENDING).hexdigest()) == PENDING
    code, out = await sendstream(service_env, "audit", "verify", "--org", str(other_org))
    assert code == 0 and "every hash matches" in out, out

    # and a second run finds nothing left
    code, out = await sendstream(service_env, "tenant", "delete", str(org_id), "--yes")
    assert code == 1 and "no organization" in out, out


async def test_the_operators_organization_is_refused(
    operator: Api, db: asyncpg.Pool, service_env: dict
) -> None:
    org_id = await db.fetchval("SELECT id FROM organizations WHERE is_operator LIMIT 1")
    code, out = await sendstream(service_env, "tenant", "delete", str(org_id), "--yes")
    assert code == 1 and "operator" in out, out
    assert await db.fetchval("SELECT count(*) FROM api_keys WHERE org_id = $1 AND revoked_at IS NULL", org_id)


async def test_every_table_holding_an_organizations_rows_is_erased(db: asyncpg.Pool) -> None:
    """A table added later with an org_id, identity_id or mailbox_id column must be added to ERASED."""
    tables = {table for table, _ in await naming_columns(db)}
    assert tables - {table for table, _ in ERASED} == set()
