"""The egress policy on the real stack (issue 23, findings 2 and 5): a mailbox's SMTP relay and IMAP host
lead only where the policy permits, at the API and at each connection; what a server that is no relay
said never reaches the tenant; a relay's password never follows a change of host.

The shared stack allows 127.0.0.0/8 (its relays run on this machine), so refusals at dispatch use
special-purpose addresses outside it; a second ingress that allows nothing shows loopback refused."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import asyncpg
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from devstack.infra import free_port
from devstack.local import Stack, wait_ready
from tests.conftest import Api, Relay, _RecordingHandler, eventually
from tests.integration.test_dispatch import message_state, trail
from tests.integration.test_send import make_identity

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

SPECIAL = ["169.254.169.254", "10.0.0.5", "0.0.0.0", "::1", "::ffff:10.0.0.5", "100.64.0.1"]
SSH = b"SSH-2.0-OpenSSH_9.6p1 secret-build-7\r\n"
POSTGRES = b"E\x00\x00\x00\x54SFATAL\x00C0A000\x00Munsupported frontend protocol 8224.8224\x00\x00"


async def new_identity(api: Api) -> str:
    handle = f"egress-{uuid.uuid4().hex[:8]}@example.test"
    assert (await api.call("POST", "/v1/identities", {"handle": handle}))[0] == 201
    return handle


def mailbox_body(smtp: dict, **more) -> dict:
    return {"email": f"pool-{uuid.uuid4().hex[:6]}@tryacme.test", "smtp": smtp, **more}


def error_of(body) -> str:
    """The error message in each dialect's shape."""
    body = body.get("detail", body)
    return body["error"]["message"] if isinstance(body.get("error"), dict) else body["message"]


async def test_a_mailbox_aimed_at_a_special_purpose_address_is_refused_at_the_api(
    api: Api, relay: Relay
) -> None:
    """SMTP and IMAP hosts at link-local, private, unspecified, loopback-v6, mapped and CGNAT addresses:
    400 naming the field, in every dialect and on change; nothing is stored."""
    handle = await new_identity(api)
    url = f"/v1/identities/{handle}/mailboxes"
    for host in SPECIAL:
        status, body, _ = await api.call("POST", url, mailbox_body({"host": host, "port": 80, "tls": "none"}))
        assert status == 400 and error_of(body).startswith("smtp.host:"), (host, body)
        imap = {"host": host, "port": 143, "tls": "starttls", "username": "u", "password": "p"}
        status, body, _ = await api.call("POST", url, mailbox_body(relay.smtp_settings(), imap=imap))
        assert status == 400 and error_of(body).startswith("imap.host:"), (host, body)
    assert (await api.call("GET", url))[1]["data"] == []

    smtp = {"host": "169.254.169.254", "port": 80, "tls": "none"}
    status, body, _ = await api.call("POST", "/v1/inboxes", {"name": "x", "smtp": smtp})
    assert status == 400 and error_of(body).startswith("smtp.host:"), body
    address = f"m-{uuid.uuid4().hex[:6]}@tryacme.test"
    status, body, _ = await api.call("POST", "/mailboxes", {"email_address": address, "smtp": smtp})
    assert status == 400 and error_of(body).startswith("smtp.host:"), body

    status, mailbox, _ = await api.call("POST", url, mailbox_body(relay.smtp_settings()))
    assert status == 201, mailbox
    status, body, _ = await api.call("PATCH", f"{url}/{mailbox['id']}", {"smtp": {"host": "10.0.0.5"}})
    assert status == 400 and error_of(body).startswith("smtp.host:"), body
    assert (await api.call("GET", f"{url}/{mailbox['id']}"))[1]["smtp"]["host"] == relay.host


@pytest.fixture(scope="module")
def strict_ingress(stack: Stack) -> Iterator[str]:
    """A second ingress process whose operator allowed no network; its base URL."""
    port = free_port()
    name = f"ingress-egress-{uuid.uuid4().hex[:4]}"
    env = {"SENDSTREAM_HTTP_PORT": str(port), "SENDSTREAM_EGRESS_ALLOWED_NETWORKS": "[]"}
    stack.start(name, list(stack.args["ingress"]), env=env)
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", 60)
        yield f"http://127.0.0.1:{port}"
    finally:
        stack.stop(name)


async def test_without_an_allowed_network_this_machines_services_are_refused(
    api: Api, strict_ingress: str, service_env: dict[str, str]
) -> None:
    """With SENDSTREAM_EGRESS_ALLOWED_NETWORKS empty, a relay at PostgreSQL's or the API's port on this
    machine (by address or by name), and an IMAP host at localhost, are refused."""
    strict = Api(api.session, strict_ingress, api.key)
    handle = await new_identity(strict)
    url = f"/v1/identities/{handle}/mailboxes"
    postgres = urlsplit(service_env["DATABASE_URL"]).port
    for host, port in [("127.0.0.1", postgres), ("localhost", postgres), ("127.0.0.1", int(service_env["SENDSTREAM_HTTP_PORT"]))]:  # fmt: skip
        status, body, _ = await strict.call(
            "POST", url, mailbox_body({"host": host, "port": port, "tls": "none"})
        )
        assert status == 400 and error_of(body).startswith("smtp.host:"), (host, body)
        assert "not a public address" in error_of(body)
    imap = {"host": "localhost", "port": 143, "tls": "starttls", "username": "u", "password": "p"}
    smtp = {"host": "smtp.example.test", "port": 25, "tls": "starttls"}  # a name that does not resolve yet
    status, body, _ = await strict.call("POST", url, mailbox_body(smtp, imap=imap))
    assert status == 400 and error_of(body).startswith("imap.host:"), body
    status, body, _ = await strict.call("POST", url, mailbox_body(smtp))
    assert status == 201, body


@pytest.mark.parametrize(("host", "port"), [("169.254.169.254", 80), ("0.0.0.0", None), ("10.0.0.5", 25)])
async def test_a_send_through_a_relay_the_policy_refuses_fails_for_good(
    api: Api, relay: Relay, db: asyncpg.Pool, service_env: dict[str, str], host: str, port: int | None
) -> None:
    """A relay whose address the policy refuses at connect time (stored before the policy, or a name that
    now points inside) fails the send at once, saying so, never retried; nothing is connected to."""
    handle, [mailbox] = await make_identity(api, relay)
    port = port or urlsplit(service_env["DATABASE_URL"]).port  # 0.0.0.0 reaches this machine's PostgreSQL
    await db.execute(
        "UPDATE mailboxes SET smtp_host = $2, smtp_port = $3 WHERE email = $1", mailbox["email"], host, port
    )
    status, body, _ = await api.call(
        "POST", f"/v1/identities/{handle}/send", {"to": "m@example.test", "subject": "s", "text": "t"}
    )
    assert status == 202, body
    sent = body["messages"][0]
    msg = await eventually(lambda: message_state(api, sent, "failed"))
    assert msg["reason"] == f"the relay's address {host} is not allowed by the egress policy", msg
    await eventually(lambda: _trail_ends(api, msg, "MessageFailed"))
    assert await trail(api, msg) == ["SendRequested", "SendAccepted", "MessageFailed"]


async def _trail_ends(api: Api, msg: dict, event_type: str) -> bool:
    types = await trail(api, msg)
    return bool(types) and types[-1] == event_type


@contextlib.asynccontextmanager
async def impostor(banner: bytes) -> AsyncIterator[int]:
    """A TCP server on this machine that is no mail server: it greets each client with `banner`."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(banner)
        with contextlib.suppress(Exception):
            await writer.drain()
            while await reader.read(4096):
                pass
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def tenant_view(api: Api, sent: dict, msg: dict) -> str:
    """Everything the tenant can read about a message: its conversation and its audit trail."""
    _, conv, _ = await api.call("GET", f"/v1/conversations/{sent['convId']}")
    _, events, _ = await api.call("GET", f"/v1/messages/{msg['messageId']}/events")
    return json.dumps([conv, events])


@pytest.mark.parametrize(
    "banner", [SSH, POSTGRES, b"HTTP/1.1 400 Bad Request\r\nServer: internal-api/2.1\r\n\r\n"]
)
async def test_what_a_server_that_is_no_relay_said_never_reaches_the_tenant(
    api: Api, relay: Relay, db: asyncpg.Pool, banner: bytes
) -> None:
    """A relay that greets with an SSH banner, a PostgreSQL error or an HTTP answer: the send is retried,
    then given up, with a fixed phrase; none of the server's bytes in any event or view."""
    async with impostor(banner) as port:
        handle, [mailbox] = await make_identity(api, relay)
        await db.execute("UPDATE mailboxes SET smtp_port = $2 WHERE email = $1", mailbox["email"], port)
        status, body, _ = await api.call(
            "POST", f"/v1/identities/{handle}/send", {"to": "m@example.test", "subject": "s", "text": "t"}
        )
        assert status == 202, body
        sent = body["messages"][0]
        msg = await eventually(lambda: message_state(api, sent, "failed"), timeout=30)
    assert msg["reason"].endswith(": the relay did not answer as an SMTP server"), msg
    await eventually(lambda: _trail_ends(api, msg, "MessageFailed"))
    seen = await tenant_view(api, sent, msg)
    assert "the relay did not answer as an SMTP server" in seen
    for fragment in (
        "SSH-2.0",
        "OpenSSH",
        "secret-build",
        "FATAL",
        "frontend protocol",
        "HTTP/1.1",
        "internal-api",
    ):
        assert fragment not in seen, fragment


async def test_a_relay_greeting_with_control_characters_reaches_the_tenant_as_a_clean_reply(
    api: Api, relay: Relay, db: asyncpg.Pool
) -> None:
    """A well-formed refusal keeps its code and words, its control characters made harmless."""
    async with impostor(b"554 5.7.1 \x1b]0;owned\x07 no service here\r\n") as port:
        handle, [mailbox] = await make_identity(api, relay)
        await db.execute("UPDATE mailboxes SET smtp_port = $2 WHERE email = $1", mailbox["email"], port)
        _, body, _ = await api.call(
            "POST", f"/v1/identities/{handle}/send", {"to": "m@example.test", "subject": "s", "text": "t"}
        )
        sent = body["messages"][0]
        msg = await eventually(lambda: message_state(api, sent, "failed"))
    assert msg["reason"] == "relay answered 554", msg
    await eventually(lambda: _trail_ends(api, msg, "MessageFailed"))  # the reply is in the trail's event
    seen = await tenant_view(api, sent, msg)
    assert "\\u001b" not in seen and "\\u0007" not in seen and "?]0;owned? no service here" in seen


async def mailsync_error(api: Api, relay: Relay, imap: dict) -> str:
    handle = await new_identity(api)
    url = f"/v1/identities/{handle}/mailboxes"
    status, mailbox, _ = await api.call("POST", url, mailbox_body(relay.smtp_settings(), imap=imap))
    assert status == 201, mailbox

    async def failed() -> str | None:
        _, m, _ = await api.call("GET", f"{url}/{mailbox['id']}")
        return m["sync"]["error"] if m["sync"]["state"] == "error" else None

    return await eventually(failed, timeout=30, interval=0.2)


async def test_mail_syncs_error_tells_nothing_of_what_listens_at_the_imap_host(
    api: Api, relay: Relay
) -> None:
    """An IMAP host that greets as SSH, and a closed port: fixed phrases, no banner, no errno."""
    imap = {"host": "127.0.0.1", "tls": "none", "username": "u", "password": "p"}
    async with impostor(SSH) as port:
        error = await mailsync_error(api, relay, {**imap, "port": port})
    assert error == "the server did not answer as an IMAP server", error
    error = await mailsync_error(api, relay, {**imap, "port": free_port()})
    assert error == "could not connect to the IMAP server", error


async def test_a_relay_password_never_follows_a_change_of_host(api: Api) -> None:
    """PATCH smtp.host to another relay without a password: the stored credentials are cleared, and the
    new relay, which offers AUTH, gets none (finding 5). A password without TLS to a public host: 400."""
    logins: list[tuple[str, bytes, bytes]] = []

    def authenticator(name: str):
        def check(server, session, envelope, mechanism, auth_data) -> AuthResult:
            logins.append((name, auth_data.login, auth_data.password))
            return AuthResult(success=True)

        return check

    first, second = Relay("127.0.0.1", free_port()), Relay("127.0.0.2", free_port())
    controllers = [
        Controller(_RecordingHandler(r), hostname=r.host, port=r.port, authenticator=authenticator(name),
                   auth_require_tls=False)
        for name, r in (("first", first), ("second", second))
    ]  # fmt: skip
    for c in controllers:
        c.start()
    try:
        handle = await new_identity(api)
        url = f"/v1/identities/{handle}/mailboxes"
        smtp = {**first.smtp_settings(), "username": "relay-user", "password": "s3cret-relay-pw"}
        status, mailbox, _ = await api.call("POST", url, mailbox_body(smtp))
        assert status == 201, mailbox
        send = {"to": "m@example.test", "subject": "s", "text": "t"}
        assert (await api.call("POST", f"/v1/identities/{handle}/send", send))[0] == 202
        await first.wait_for(1)
        assert logins == [("first", b"relay-user", b"s3cret-relay-pw")]

        status, moved, _ = await api.call(
            "PATCH", f"{url}/{mailbox['id']}", {"smtp": {"host": second.host, "port": second.port}}
        )
        assert status == 200, moved
        assert (await api.call("POST", f"/v1/identities/{handle}/send", send))[0] == 202
        await second.wait_for(1)
        assert logins == [("first", b"relay-user", b"s3cret-relay-pw")], logins
        assert moved["smtp"]["username"] is None, moved
    finally:
        for c in controllers:
            c.stop()

    public = {"host": "8.8.8.8", "port": 587, "tls": "none", "username": "u", "password": "p"}
    status, body, _ = await api.call("POST", url, mailbox_body(public))
    assert status == 400 and error_of(body).startswith("smtp.tls:"), body
    status, body, _ = await api.call("POST", url, mailbox_body({**public, "tls": "starttls"}))
    assert status == 201, body
    status, body, _ = await api.call("PATCH", f"{url}/{body['id']}", {"smtp": {"tls": "none"}})
    assert status == 400 and error_of(body).startswith("smtp.tls:"), body
