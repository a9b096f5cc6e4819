"""Authentication, tenancy and input validation at the ingress, on the real stack."""

from __future__ import annotations

import hashlib

import asyncpg
import pytest

from devstack.infra import free_port
from devstack.local import Stack, wait_ready
from schemas import ids
from tests.conftest import Api, Relay, eventually, new_org
from tests.integration.test_send import make_identity

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def test_unknown_or_missing_key_is_401(api: Api) -> None:
    """No key, a malformed header, or a key that was never issued: 401 with a JSON error."""
    for key in (None, "sk_live_never_issued"):
        status, body, _ = await api.as_key(key).call("GET", "/v1/identities")
        assert status == 401, body
        assert body["error"]["type"] == "unauthorized"
    status, _, _ = await api.call("GET", "/v1/identities", key=None, headers={"Authorization": "Basic abc"})
    assert status == 401


async def test_revoked_key_is_401_at_once(api: Api) -> None:
    """A key works until it is revoked, and is refused on the very next request after."""
    status, created, _ = await api.call("POST", "/v1/api-keys", {"scopes": ["read"]})
    assert status == 201 and created["apiKey"].startswith("sk_live_") and created["scopes"] == ["read"]
    reader = api.as_key(created["apiKey"])
    assert (await reader.call("GET", "/v1/identities"))[0] == 200
    assert (await api.call("DELETE", f"/v1/api-keys/{created['id']}"))[0] == 204
    status, body, _ = await reader.call("GET", "/v1/identities")
    assert status == 401 and body["error"]["message"] == "invalid or revoked API key"


async def test_scopes_are_enforced(api: Api) -> None:
    """A read-only key cannot create identities or send."""
    _, created, _ = await api.call("POST", "/v1/api-keys", {"scopes": ["read"]})
    reader = api.as_key(created["apiKey"])
    status, body, _ = await reader.call("POST", "/v1/identities", {"handle": "x@example.test"})
    assert status == 403 and "admin" in body["error"]["message"]


async def test_keys_are_stored_hashed(api: Api, db: asyncpg.Pool) -> None:
    """The database holds a hash of each key, never the key itself."""
    _, created, _ = await api.call("POST", "/v1/api-keys", {"scopes": ["send"]})
    key = created["apiKey"]
    row = await db.fetchrow(
        "SELECT key_hash, key_prefix, a::text AS whole FROM api_keys a WHERE id = $1",
        ids.parse("key", created["id"]),
    )
    assert row["key_hash"] == hashlib.sha256(key.encode()).digest()
    assert key.startswith(row["key_prefix"]) and len(row["key_prefix"]) < len(key) // 2
    assert key not in row["whole"] and key.encode().hex() not in row["whole"]  # no column holds the key


async def test_other_organizations_identity_is_404(api: Api, operator: Api, relay: Relay) -> None:
    """Another tenant's identity and conversation are 404, exactly as if they did not exist."""
    handle, _ = await make_identity(api, relay)
    _, sent, _ = await api.call(
        "POST", f"/v1/identities/{handle}/send", {"to": "q@example.test", "subject": "s", "text": "t"}
    )
    conv = sent["messages"][0]["convId"]
    other = await new_org(operator)
    for method, path, body in (
        ("GET", f"/v1/identities/{handle}", None),
        ("POST", f"/v1/identities/{handle}/send", {"to": "q@example.test", "subject": "s", "text": "t"}),
        ("GET", f"/v1/identities/{handle}/mailboxes", None),
        ("GET", f"/v1/conversations/{conv}", None),
    ):
        status, err, _ = await other.call(method, path, body)
        assert status == 404, (path, err)
        assert err["error"]["type"] == "not_found"
    status, mine, _ = await other.call("GET", "/v1/identities")
    assert status == 200 and mine == {"data": []}
    await relay.wait_for(1)
    assert len(relay.received) == 1


async def test_only_operator_keys_create_organizations(api: Api) -> None:
    """A tenant's admin key cannot create organizations."""
    status, _, _ = await api.call("POST", "/v1/organizations", {"name": "nope"})
    assert status == 403


async def test_crlf_in_subject_is_400_and_nothing_is_sent(api: Api, relay: Relay) -> None:
    """Header injection attempts are refused with a message naming the field, and nothing reaches the relay."""
    handle, _ = await make_identity(api, relay)
    for subject in ("Hello\r\nBcc: victim@example.test", "Hi\nthere", "nul\x00byte"):
        status, body, _ = await api.call(
            "POST", f"/v1/identities/{handle}/send", {"to": "r@example.test", "subject": subject, "text": "x"}
        )
        assert status == 400, body
        assert body["error"]["type"] == "invalid_request"
        assert body["error"]["message"].startswith("subject:")
    # A valid send afterwards goes through the same partition: once it arrives, anything before it would have.
    status, _, _ = await api.call(
        "POST", f"/v1/identities/{handle}/send", {"to": "r@example.test", "subject": "clean", "text": "x"}
    )
    assert status == 202
    await relay.wait_for(1)
    assert [r.message["Subject"] for r in relay.received] == ["clean"]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"subject": "s", "text": "t"}, "to is required"),
        ({"to": "not-an-address", "subject": "s", "text": "t"}, "to[0]: is not a valid email address"),
        ({"to": ["a@example.test", "a@EXAMPLE.test"], "subject": "s", "text": "t"}, "more than once"),
        ({"to": "a@example.test", "text": "t"}, "subject is required"),
        ({"to": "a@example.test", "subject": "s"}, "text or html is required"),
        ({"to": "a@example.test", "subject": "s", "text": "t", "bogus": 1}, "bogus: is not a known field"),
        ({"convId": "conv_x", "to": "a@example.test", "text": "t"}, "convId is mutually exclusive"),
        ({"to": "a@example.test", "subject": "x" * 999, "text": "t"}, "subject:"),
        ({"to": "a@example.test\r\n", "subject": "s", "text": "t"}, "to[0]:"),
    ],
)
async def test_bad_send_bodies_are_400_naming_the_field(
    api: Api, relay: Relay, payload: dict, message: str
) -> None:
    """Each malformed send gets a 400 whose message says what is wrong and where."""
    handle, _ = await make_identity(api, relay)
    status, body, _ = await api.call("POST", f"/v1/identities/{handle}/send", payload)
    assert status == 400, body
    assert message in body["error"]["message"], body


async def test_non_json_body_is_400(api: Api, relay: Relay) -> None:
    """A body that is not a JSON object is refused plainly."""
    handle, _ = await make_identity(api, relay)
    for data in (b"{not json", b"[1, 2]"):
        status, body, _ = await api.call(
            "POST", f"/v1/identities/{handle}/send", data=data, headers={"Content-Type": "application/json"}
        )
        assert status == 400 and "JSON" in body["error"]["message"], body


async def test_revocation_and_deletion_reach_every_ingress_process(
    api: Api, relay: Relay, stack: Stack
) -> None:
    """Keys and identities are cached per ingress process: a change made through one is seen by another at once."""
    port = free_port()
    stack.start("ingress-2", ["-m", "services.ingress"], env={"SENDSTREAM_HTTP_PORT": str(port)})
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", 60)
        other = Api(api.session, f"http://127.0.0.1:{port}", api.key)
        _, created, _ = await api.call("POST", "/v1/api-keys", {"scopes": ["read"]})
        handle, _ = await make_identity(api, relay)
        for client in (api, other):  # warm both caches
            assert (await client.as_key(created["apiKey"]).call("GET", "/v1/identities"))[0] == 200
            assert (await client.call("GET", f"/v1/identities/{handle}"))[0] == 200
        assert (await api.call("DELETE", f"/v1/api-keys/{created['id']}"))[0] == 204
        assert (await api.call("DELETE", f"/v1/identities/{handle}"))[0] == 204

        async def refused() -> bool:
            key_gone = (await other.as_key(created["apiKey"]).call("GET", "/v1/identities"))[0] == 401
            identity_gone = (await other.call("GET", f"/v1/identities/{handle}"))[0] == 404
            return key_gone and identity_gone

        await eventually(refused, timeout=1.0, interval=0.01)
    finally:
        stack.stop("ingress-2")
