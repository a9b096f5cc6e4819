"""The egress policy (services/common/egress.py) and dispatch's SMTP client under it, against real sockets
on this machine: what is refused, where a connection goes, and what of a server's words a tenant sees."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from devstack.infra import free_port
from services.common.egress import Egress, EgressRefused, Unresolvable, UnsafeDestination, printable
from services.dispatch.smtp import NOT_SMTP, UNREACHABLE, Relay, SmtpPool, classify
from services.mailsync.session import GuardedIMAP4, ImapRefused, shown
from tests.conftest import Relay as Recording
from tests.conftest import _RecordingHandler

LOCAL = ["127.0.0.0/8"]


@pytest.mark.parametrize(
    "host",
    ["169.254.169.254", "10.0.0.5", "0.0.0.0", "::1", "::ffff:10.0.0.5", "[::1]", "100.64.0.1", "224.0.0.1",
     "fe80::1", "127.0.0.1", "localhost"],
)  # fmt: skip
async def test_a_special_purpose_host_is_refused_when_set(host: str) -> None:
    """At the API: a literal special-purpose address, or a name resolving only to them, is refused."""
    with pytest.raises(UnsafeDestination, match="not a public address"):
        await Egress().check_host(host, 25)


async def test_an_allowed_network_and_an_unresolved_name_pass_when_set() -> None:
    """The operator's networks pass; a name that does not resolve yet is checked again at connect time."""
    await Egress(LOCAL).check_host("127.0.0.1", 25)
    await Egress(LOCAL).check_host("localhost", 25)  # ::1 is refused, 127.0.0.1 is not: it can be reached
    await Egress().check_host("relay.does-not-exist.invalid", 25)
    await Egress().check_host("8.8.8.8", 25)


async def test_a_password_without_tls_goes_only_to_an_operators_cleartext_network() -> None:
    """password + tls none: refused unless every address is in SENDSTREAM_EGRESS_CLEARTEXT_AUTH_NETWORKS."""
    with pytest.raises(UnsafeDestination, match="only over TLS"):
        await Egress().check_host("8.8.8.8", 25, password=True, tls=False)
    with pytest.raises(UnsafeDestination, match="only over TLS"):
        await Egress(LOCAL).check_host("127.0.0.1", 25, password=True, tls=False)
    with pytest.raises(UnsafeDestination, match="only over TLS"):  # cannot be shown to be in the network
        await Egress(LOCAL, LOCAL).check_host("relay.does-not-exist.invalid", 25, password=True, tls=False)
    await Egress(LOCAL, LOCAL).check_host("127.0.0.1", 25, password=True, tls=False)
    await Egress().check_host("8.8.8.8", 25, password=True, tls=True)
    await Egress().check_host("8.8.8.8", 25, password=False, tls=False)


@contextlib.asynccontextmanager
async def listener(banner: bytes = b"") -> AsyncIterator[tuple[int, list[bytes]]]:
    """A TCP server on 127.0.0.1 that says `banner` to each client and records what it hears."""
    heard: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heard.append(b"<connected>")
        if banner:
            writer.write(banner)
            await writer.drain()
        with contextlib.suppress(Exception):
            while data := await reader.read(4096):
                heard.append(data)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], heard
    finally:
        server.close()


async def test_a_connection_goes_only_to_a_checked_address() -> None:
    """connect resolves, checks and connects to what it checked; a refused host is never connected to."""
    async with listener() as (port, heard):
        with pytest.raises(EgressRefused, match=r"address 127\.0\.0\.1 is not allowed"):
            await Egress().connect("localhost", port, 2)
        with pytest.raises(EgressRefused):
            await Egress().connect("0.0.0.0", port, 2)  # Linux connects 0.0.0.0 to this machine
        await asyncio.sleep(0.1)
        assert heard == []
        sock, address = await Egress(LOCAL).connect("localhost", port, 2)
        sock.close()
        assert str(address) == "127.0.0.1"
    with pytest.raises(Unresolvable):
        await Egress().connect("relay.does-not-exist.invalid", 25, 2)


def test_printable_keeps_a_servers_words_and_nothing_else() -> None:
    """Control characters and undecoded bytes become `?`, lines are joined, the length is bounded."""
    said = "5.7.1 \x1b]0;owned\x07 go\r\n away \udcff\x00"
    assert printable(said) == "5.7.1 ?]0;owned? go away ??"
    assert len(printable("x" * 10_000)) == 500


def pool(egress: Egress) -> SmtpPool:
    return SmtpPool(timeout=2, transaction_timeout=5, hostname="test.local", size=1, idle_s=30, egress=egress)


@pytest.mark.parametrize(
    "banner",
    [b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n", b"R\x00\x00\x00\x08\x00\x00\x00\x03secret\r\n",
     b"HTTP/1.1 400 Bad Request\r\nServer: internal-api\r\n\r\n", b"12\r\n"],
)  # fmt: skip
async def test_a_server_that_is_no_smtp_relay_is_a_fixed_phrase(banner: bytes) -> None:
    """What a non-SMTP server said never reaches the outcome: only "did not answer as an SMTP server"."""
    async with listener(banner) as (port, _):
        outcome = await pool(Egress(LOCAL)).deliver(
            Relay("127.0.0.1", port, "none", None, None), "a@x.test", ["b@y.test"], b"Subject: s\r\n\r\nt\r\n"
        )
    assert (outcome.kind, outcome.reason, outcome.reply) == ("soft", NOT_SMTP, None)


async def test_a_closed_port_is_a_fixed_phrase() -> None:
    """A refused connection says only that it could not connect (no errno, no address)."""
    port = free_port()
    outcome = await pool(Egress(LOCAL)).deliver(
        Relay("127.0.0.1", port, "none", None, None), "a@x.test", ["b@y.test"], b"Subject: s\r\n\r\nt\r\n"
    )
    assert (outcome.kind, outcome.reason) == ("soft", UNREACHABLE)


async def test_a_relay_refused_by_the_policy_fails_for_good() -> None:
    """A relay whose address the policy refuses is a permanent failure naming the address."""
    outcome = await pool(Egress()).deliver(
        Relay("169.254.169.254", 80, "none", None, None), "a@x.test", ["b@y.test"], b"Subject: s\r\n\r\nt\r\n"
    )
    assert outcome.kind == "hard"
    assert outcome.reason == "the relay's address 169.254.169.254 is not allowed by the egress policy"


async def test_a_relay_on_this_machine_is_refused_unless_its_network_is_allowed(relay_factory) -> None:
    """Without an allowed network a relay on loopback gets no connection at all: a permanent failure."""
    recording = relay_factory()
    relay = Relay("127.0.0.1", recording.port, "none", None, None)
    refused = await pool(Egress()).deliver(relay, "a@x.test", ["b@y.test"], b"Subject: s\r\n\r\nt\r\n")
    assert (refused.kind, refused.reason) == (
        "hard", "the relay's address 127.0.0.1 is not allowed by the egress policy"
    )  # fmt: skip
    assert recording.received == []
    sent = await pool(Egress(LOCAL)).deliver(relay, "a@x.test", ["b@y.test"], b"Subject: s\r\n\r\nt\r\n")
    assert sent.kind == "sent" and len(recording.received) == 1


def test_a_relays_reply_reaches_the_tenant_well_formed() -> None:
    """A reply with a 3-digit code keeps its code and printable text; anything else is a fixed phrase."""
    hard = classify(aiosmtplib.SMTPResponseException(554, "5.7.1 \x1b[31mno\x00 thanks"))
    assert (hard.kind, hard.reply.code, hard.reply.message) == ("hard", 554, "5.7.1 ?[31mno? thanks")
    odd = classify(aiosmtplib.SMTPResponseException(-1, "Malformed SMTP response line: SSH-2.0-OpenSSH"))
    assert (odd.reason, odd.reply) == (NOT_SMTP, None)
    assert classify(aiosmtplib.SMTPResponseException(12, "x")).reason == NOT_SMTP


async def test_no_password_goes_to_a_relay_without_tls_unless_the_operator_allows_it() -> None:
    """tls none + credentials: no AUTH at all to an address outside the cleartext networks (a permanent
    failure saying why), and a login where the operator allows it."""
    logins: list[tuple[bytes, bytes]] = []

    def authenticator(server, session, envelope, mechanism, auth_data) -> AuthResult:
        logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=True)

    recording = Recording("127.0.0.1", free_port())
    controller = Controller(_RecordingHandler(recording), hostname="127.0.0.1", port=recording.port,
                            authenticator=authenticator, auth_require_tls=False)  # fmt: skip
    controller.start()
    try:
        relay = Relay("127.0.0.1", recording.port, "none", "user", "pw")
        data = b"Subject: s\r\n\r\nt\r\n"
        refused = await pool(Egress(LOCAL)).deliver(relay, "a@x.test", ["b@y.test"], data)
        assert refused.kind == "hard" and "not sent without TLS to 127.0.0.1" in refused.reason
        assert logins == [] and recording.received == []
        sent = await pool(Egress(LOCAL, LOCAL)).deliver(relay, "a@x.test", ["b@y.test"], data)
        assert sent.kind == "sent" and logins == [(b"user", b"pw")]
    finally:
        controller.stop()


async def test_mail_sync_connects_only_where_the_policy_permits_and_shows_fixed_phrases() -> None:
    """The IMAP client goes through the policy and gives up on a server that greets and falls silent; a
    session's error is a fixed phrase or the server's printable answer."""
    async with listener(b"* OK IMAP4rev1 ready\r\n") as (port, heard):
        refused = GuardedIMAP4(Egress(), "127.0.0.1", port, 2, None)
        with pytest.raises(EgressRefused) as caught:
            await refused.wait_hello_from_server()
        assert (
            shown(caught.value) == "the IMAP server's address 127.0.0.1 is not allowed by the egress policy"
        )
        allowed = GuardedIMAP4(Egress(LOCAL), "localhost", port, 1, None)
        await asyncio.wait_for(allowed._client_task, 2)
        assert str(allowed.address) == "127.0.0.1" and heard[0] == b"<connected>"
        # it greets, then never answers CAPABILITY: noticed, where aioimaplib alone would wait for ever
        await asyncio.wait_for(allowed.protocol.not_imap.wait(), 5)
    assert shown(ImapRefused("login refused: NO \x1b[2J[AUTHENTICATIONFAILED]\r\n bad")) == (
        "login refused: NO ?[2J[AUTHENTICATIONFAILED] bad"
    )
    assert (
        shown(ConnectionResetError(104, "Connection reset by peer"))
        == "the IMAP server closed the connection"
    )


def _certificate(tmp_path, name: str) -> tuple[str, str]:
    """A self-signed certificate for `name` (its own trust anchor) and its key, as PEM files."""
    from datetime import UTC, datetime, timedelta  # noqa: PLC0415 - only this test makes certificates

    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_file), str(key_file)


@pytest.mark.parametrize(("certified", "sent"), [("localhost", True), ("other.test", False)])
async def test_tls_verifies_the_relays_name_though_the_connection_goes_to_its_checked_address(
    tmp_path, monkeypatch: pytest.MonkeyPatch, certified: str, sent: bool
) -> None:
    """The socket goes to 127.0.0.1, yet TLS checks the certificate against the relay's name: a
    certificate for `localhost` is taken, one for another name is not."""
    import ssl  # noqa: PLC0415

    cert, key = _certificate(tmp_path, certified)
    monkeypatch.setenv("SSL_CERT_FILE", cert)  # the client's default context trusts it
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    recording = Recording("127.0.0.1", free_port())
    controller = Controller(
        _RecordingHandler(recording), hostname="127.0.0.1", port=recording.port, ssl_context=server_tls
    )
    controller.start()
    try:
        relay = Relay("localhost", recording.port, "tls", None, None)
        outcome = await pool(Egress(LOCAL)).deliver(
            relay, "a@x.test", ["b@y.test"], b"Subject: s\r\n\r\nt\r\n"
        )
    finally:
        controller.stop()
    if sent:
        assert outcome.kind == "sent" and len(recording.received) == 1, outcome
    else:
        assert outcome.reason.startswith("TLS with the relay failed") and recording.received == [], outcome
