"""IMAP sync of pool mailboxes (issue 14): a mailbox's IMAP account, as the identities dialect sets and
shows it."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import Api, Relay

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

IMAP = {
    "host": "imap.example.test",
    "port": 993,
    "tls": "tls",
    "username": "pool1@tryacme.test",
    "password": "s3cret",
}


async def test_a_mailbox_carries_an_imap_account_whose_password_is_sealed_and_never_shown(
    api: Api, relay: Relay, db
) -> None:
    handle = f"agent-{uuid.uuid4().hex[:8]}@example.test"
    assert (await api.call("POST", "/v1/identities", {"handle": handle}))[0] == 201
    email = f"pool-{uuid.uuid4().hex[:6]}@tryacme.test"
    status, mailbox, _ = await api.call(
        "POST", f"/v1/identities/{handle}/mailboxes", {"email": email, "smtp": relay.smtp_settings(), "imap": IMAP}
    )  # fmt: skip
    assert status == 201, mailbox
    assert mailbox["imap"] == {k: v for k, v in IMAP.items() if k != "password"}
    assert mailbox["sync"] == {"state": "idle", "error": None, "lastSyncedAt": None}
    url = f"/v1/identities/{handle}/mailboxes/{mailbox['id']}"
    assert (await api.call("GET", url))[1] == mailbox
    stored = await db.fetchval("SELECT imap_password FROM mailboxes WHERE email = $1", email)
    assert stored and "s3cret" not in stored

    status, changed, _ = await api.call(
        "PATCH", url, {"imap": {**IMAP, "host": "mail.tryacme.test", "port": 143, "tls": "starttls"}}
    )
    assert (
        status == 200
        and changed["imap"]["host"] == "mail.tryacme.test"
        and changed["imap"]["tls"] == "starttls"
    )
    status, body, _ = await api.call("PATCH", url, {"imap": {"host": "x.test", "username": "u"}})
    assert status == 400 and "imap.password" in body["error"]["message"], body
    status, removed, _ = await api.call("PATCH", url, {"imap": None})
    assert status == 200 and removed["imap"] is None and removed["sync"] is None
    status, plain, _ = await api.call("PATCH", url, {"hourlyLimit": 10})
    assert status == 200 and plain["imap"] is None
    assert await db.fetchval("SELECT imap_password FROM mailboxes WHERE email = $1", email) is None
