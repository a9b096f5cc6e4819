"""Fixtures: real infrastructure for the session, services as real processes, SMTP relays on port 0.

The broker and PostgreSQL come from devstack/infra.py, exactly as for `make run`:
KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL if set, testcontainers if a Docker engine answers, otherwise
the embedded Tansu broker and PostgreSQL. Each test gets its own organization, so tests never see
each other's data.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import aiosmtplib
import asyncpg
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer
from aiosmtpd.controller import Controller

from devstack.infra import Infra, ensure_infra, free_port, wait_for_port
from devstack.local import Stack, wait_ready
from schemas.events import parse_event
from services.common.db import init_connection, migrate
from services.common.secrets import new_key
from tests.dnsserver import DnsServer


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    data = Path(tempfile.mkdtemp(prefix="sendstream-test-"))
    data.chmod(0o755)  # embedded PostgreSQL runs unprivileged when we are root
    started = ensure_infra(data, durable=False)
    try:
        yield started
    finally:
        started.stop()
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def default_relay() -> Iterator[Relay]:
    """The operator's default relay of the session: where an inbox created without `smtp` sends."""
    r = Relay("127.0.0.1", free_port())
    controller = Controller(_RecordingHandler(r), hostname="127.0.0.1", port=r.port)
    controller.start()
    try:
        yield r
    finally:
        controller.stop()


@pytest.fixture(scope="session")
def dns_server() -> Iterator[DnsServer]:
    """The DNS server domain verification asks (tests put TXT records in `records`)."""
    server = DnsServer().start()
    try:
        yield server
    finally:
        server.stop()


# Domains where any organization of the test stack may take a free address, as at the default inbox
# domain: the suite's tests make identities there under organizations of their own. Domain ownership
# itself is tested at domains of their own (tests/integration/test_domains.py).
SHARED_DOMAINS = [
    "example.test", "x.test", "y.test", "t.test", "tryacme.test", "tryacme.com", "northwind.test",
    "northwindrobotics.test", "evil.test", "else.test", "xn--bcher-kva.test",
]  # fmt: skip


@pytest.fixture(scope="session")
def service_env(infra: Infra, default_relay: Relay, dns_server: DnsServer) -> dict[str, str]:
    """The environment every service process of the session runs with."""
    http_port = free_port()
    return {
        **infra.env,
        "SENDSTREAM_KAFKA_TOPIC_PREFIX": f"test{uuid.uuid4().hex[:8]}",
        # Several partitions, as in production (the local stack uses one): a consumer's offsets, order
        # and restarts are exercised across partitions.
        "SENDSTREAM_KAFKA_PARTITIONS": "6",
        "SENDSTREAM_BOOTSTRAP_API_KEY": "sk_live_" + secrets.token_urlsafe(24),
        "SENDSTREAM_HTTP_PORT": str(http_port),
        "SENDSTREAM_PUBLIC_BASE_URL": f"http://127.0.0.1:{http_port}",
        "SENDSTREAM_INBOUND_PORT": str(free_port()),
        "SENDSTREAM_INBOUND_MAX_MESSAGE_BYTES": str(5 * 1024 * 1024),
        # A mailbox's bounce rate judged over few sends, so a test can take one past it.
        "SENDSTREAM_MAILBOX_BOUNCE_MIN_SENDS": "5",
        # No sender checks against the machine's DNS: a CI machine's resolver may not answer at all.
        # services/common/domain/receiving/authentication.py is tested with the records it needs (unit tests).
        "SENDSTREAM_INBOUND_AUTHENTICATE": "false",
        "SENDSTREAM_MAILBOX_BOUNCE_THRESHOLD": "0.2",
        "SENDSTREAM_DECISION_TIMEOUT_S": "10",
        # The suite's stack shares 2 cores with the suite and its other servers, so decisions come late at
        # times; it sheds only when far behind (test_overload.py tests shedding with bounds of its own).
        "SENDSTREAM_SHED_AFTER_S": "2",
        "SENDSTREAM_LOG_FORMAT": "json",
        "SENDSTREAM_SECRET_KEYS": json.dumps([new_key()]),
        "SENDSTREAM_RETRY_DELAYS_S": "[0.3, 0.6]",  # the retry schedule, shortened
        "SENDSTREAM_RETRY_MAX_AGE_S": "3",
        # A relay port a finished test freed may be taken by another test's server that never greets:
        # a retry there gives up soon (it no longer holds other sends up: see SMTP_PATIENCE_S).
        "SENDSTREAM_SMTP_TIMEOUT_S": "3",
        "SENDSTREAM_SMTP_TRANSACTION_TIMEOUT_S": "10",
        "SENDSTREAM_SMTP_PATIENCE_S": "1",  # a batch hands sends slower than this to a lease
        # Relays, IMAP servers and webhook receivers run on this machine (and take passwords without TLS).
        "SENDSTREAM_EGRESS_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
        "SENDSTREAM_EGRESS_CLEARTEXT_AUTH_NETWORKS": '["127.0.0.0/8"]',
        "SENDSTREAM_WEBHOOK_RETRY_SCHEDULE_S": "[0.3, 0.6, 0.9]",  # the webhook schedule, shortened
        "SENDSTREAM_WEBHOOK_TIMEOUT_S": "2",
        "SENDSTREAM_WEBHOOK_POLL_S": "0.2",
        "SENDSTREAM_INBOX_DEFAULT_DOMAIN": "inboxes.example.test",
        "SENDSTREAM_SHARED_DOMAINS": json.dumps(SHARED_DOMAINS),
        "SENDSTREAM_DNS_NAMESERVERS": json.dumps([dns_server.address]),
        "SENDSTREAM_DNS_TIMEOUT_S": "2",
        "SENDSTREAM_MAILSYNC_POLL_S": "2",  # the spam folder checked, and IDLE renewed, this often
        "SENDSTREAM_MAILSYNC_RETRY_DELAYS_S": "[0.5, 1, 2]",
        "SENDSTREAM_INBOX_DEFAULT_RELAY": json.dumps(default_relay.smtp_settings()),
    }


@pytest.fixture(scope="session")
def stack(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Every service, each in its own process, as in production."""
    logs = tmp_path_factory.mktemp("logs")
    s = Stack(service_env, log_dir=logs)
    try:
        s.start_services(90)
        wait_ready(f"http://127.0.0.1:{service_env['SENDSTREAM_HTTP_PORT']}/readyz", 90, s)
        yield s
    finally:
        s.stop_all()
        if os.environ.get("CI"):
            for f in sorted(logs.iterdir()):  # leave the services' own words in the CI output
                errors = [ln for ln in f.read_text(errors="replace").splitlines() if '"level": "error"' in ln]
                if errors:
                    print(f"--- {f.name}: {len(errors)} error lines, last:\n{errors[-1][:2000]}")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def db(service_env: dict[str, str]) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the same database the services use, for asserting on stored state."""
    pool = await asyncpg.create_pool(
        service_env["DATABASE_URL"], min_size=1, max_size=4, init=init_connection
    )
    await migrate(pool)
    yield pool
    await pool.close()


# --- HTTP ------------------------------------------------------------------------------------------


@dataclass
class Api:
    """A thin client of the ingress, bound to one API key."""

    session: aiohttp.ClientSession
    base: str
    key: str | None

    async def call(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        key: str | None = "default",
        headers: dict | None = None,
        data: bytes | None = None,
    ) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
        key = self.key if key == "default" else key
        h = dict(headers or {})
        if key:
            h["Authorization"] = f"Bearer {key}"
        async with self.session.request(method, self.base + path, json=json, data=data, headers=h) as r:
            body = await r.read()
            try:
                parsed = await r.json(content_type=None) if body else None
            except ValueError:
                parsed = body.decode(errors="replace")
            return r.status, parsed, r.headers

    def as_key(self, key: str | None) -> Api:
        return Api(self.session, self.base, key)


@pytest_asyncio.fixture(loop_scope="session")
async def operator(stack: Stack, service_env: dict[str, str]) -> AsyncIterator[Api]:
    """A client holding the operator (bootstrap) key."""
    async with aiohttp.ClientSession() as session:
        yield Api(
            session,
            f"http://127.0.0.1:{service_env['SENDSTREAM_HTTP_PORT']}",
            service_env["SENDSTREAM_BOOTSTRAP_API_KEY"],
        )


async def new_org(operator: Api) -> Api:
    status, body, _ = await operator.call(
        "POST", "/v1/organizations", {"name": f"org-{uuid.uuid4().hex[:6]}"}
    )
    assert status == 201, body
    return operator.as_key(body["apiKey"])


@pytest_asyncio.fixture(loop_scope="session")
async def api(operator: Api) -> Api:
    """A client holding the admin key of a fresh organization."""
    return await new_org(operator)


# --- SMTP relays -----------------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)  # type: ignore[return-value]


@dataclass
class Relay:
    """A real SMTP server (aiosmtpd) on a free 127.0.0.1 port, recording every message it accepts."""

    host: str
    port: int
    received: list[Received] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)  # scripted replies to DATA, consumed in order
    pauses: list[float] = field(default_factory=list)  # seconds to wait before answering DATA, in order
    pausing: int = 0  # DATA commands now held by a pause

    def smtp_settings(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "tls": "none"}

    async def wait_for(self, count: int, timeout: float = 20) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"relay got {len(self.received)} messages, expected {count}")
            await asyncio.sleep(0.02)
        return self.received

    async def before_marker(self, send: Callable[[str], Any], timeout: float = 20) -> list[Received]:
        """What this relay took, other than marker messages, once one sent now by `send(subject)` through the
        mailbox (or single-mailbox identity, or inbox) under test, once the marker is here. Decide
        takes an identity's requests in order and dispatch a mailbox's decisions in order, so anything
        the requests before it would send, wrongly or twice, has come by then: a fact that can fail,
        where a pause "for anything that should not come" proves nothing."""
        marker = f"marker {uuid.uuid4().hex}"
        await send(marker)

        def subject(r: Received) -> str:
            return str(r.message["Subject"] or "")

        deadline = time.monotonic() + timeout
        while not any(subject(r) == marker for r in self.received):
            if time.monotonic() > deadline:
                raise AssertionError(f"the marker message did not reach the relay within {timeout}s")
            await asyncio.sleep(0.02)
        return [r for r in self.received if not subject(r).startswith("marker ")]  # any test's marker


def through(api: Api, handle: str) -> Callable[[str], Any]:
    """A marker's send through the identity `handle` (Relay.before_marker)."""

    async def send(subject: str) -> None:
        status, body, _ = await api.call(
            "POST", f"/v1/identities/{handle}/send", {"to": "marker@example.test", "subject": subject, "text": "m"}
        )
        assert status == 202, body

    return send


class _RecordingHandler:
    def __init__(self, relay: Relay):
        self.relay = relay

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.relay.pauses:
            self.relay.pausing += 1
            await asyncio.sleep(self.relay.pauses.pop(0))
            self.relay.pausing -= 1
        reply = self.relay.replies.pop(0) if self.relay.replies else "250 2.0.0 OK queued"
        if not reply.startswith("250"):
            return reply
        self.relay.received.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        )
        return reply


@pytest.fixture
def relay_factory() -> Iterator[Callable[..., Relay]]:
    """Starts as many relays as a test asks for; all stop when it ends."""
    controllers: list[Controller] = []

    def start(*, smtputf8: bool = True) -> Relay:
        # aiosmtpd's Controller probes its own port after binding, so it cannot take port 0: pick a free one.
        r = Relay("127.0.0.1", free_port())
        controller = Controller(
            _RecordingHandler(r), hostname="127.0.0.1", port=r.port, enable_SMTPUTF8=smtputf8
        )
        controller.start()
        controllers.append(controller)
        return r

    try:
        yield start
    finally:
        for controller in controllers:
            controller.stop()


@pytest.fixture
def relay(relay_factory: Callable[..., Relay]) -> Relay:
    return relay_factory()


# --- webhook receivers -----------------------------------------------------------------------------


@dataclass
class Hook:
    """One request a webhook receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() on arrival

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A real HTTP server (aiohttp) on a free 127.0.0.1 port, recording every request per path.

    Each path answers 200 unless scripted: `fail(path, [500, 500])` answers those first, `hang(path)`
    never answers, `slow(path, s)` answers after `s` seconds.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.got: list[Hook] = []
        self.scripts: dict[str, list[int]] = {}
        self.delays: dict[str, float] = {}

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Hook]:
        return [h for h in self.got if h.path == path]

    def fail(self, path: str, statuses: list[int]) -> None:
        self.scripts[path] = list(statuses)

    def hang(self, path: str) -> None:
        self.delays[path] = 3600

    def slow(self, path: str, seconds: float) -> None:
        self.delays[path] = seconds

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        self.got.append(Hook(request.path, dict(request.headers), await request.read(), time.time()))
        if delay := self.delays.get(request.path):
            await asyncio.sleep(delay)
        script = self.scripts.get(request.path)
        return aiohttp.web.Response(status=script.pop(0) if script else 200, text="ok")

    async def wait_for(self, path: str, count: int, timeout: float = 20) -> list[Hook]:
        await eventually(lambda: asyncio.sleep(0, len(self.at(path)) >= count), timeout)
        return self.at(path)


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    app = aiohttp.web.Application()
    app.router.add_route("*", "/{tail:.*}", r.handle)
    runner = aiohttp.web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await aiohttp.web.TCPSite(runner, "127.0.0.1", r.port).start()
    try:
        yield r
    finally:
        await runner.cleanup()


# --- inbound SMTP --------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def inbound(stack, service_env: dict[str, str]) -> int:
    """The port of the stack's inbound SMTP server, once it listens."""
    port = int(service_env["SENDSTREAM_INBOUND_PORT"])
    wait_for_port("127.0.0.1", port, 60)
    return port


async def deliver(port: int, message: EmailMessage | bytes, sender: str, recipients: list[str]) -> None:
    """Hand a message over as an MTA does (`sender` "" is the null return path of reports)."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as client:
        data = message if isinstance(message, bytes) else message.as_bytes()
        await client.sendmail(sender, recipients, data)


# --- helpers ---------------------------------------------------------------------------------------


async def eventually(probe, timeout: float = 20, interval: float = 0.05):
    """Await `probe()` until it returns something truthy; fail with its last value after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")


async def events_on(service_env: dict[str, str], topic: Any, keep, done, timeout: float = 15) -> list[Any]:
    """Read `topic` from its start (no consumer group): the events `keep(event)` selects, until `done(kept)`."""
    consumer = AIOKafkaConsumer(
        topic.name(service_env["SENDSTREAM_KAFKA_TOPIC_PREFIX"]),
        bootstrap_servers=service_env["KAFKA_BOOTSTRAP_SERVERS"],
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
    )
    await consumer.start()
    kept: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not done(kept):
            for records in (await consumer.getmany(timeout_ms=200)).values():
                kept += [e for e in (parse_event(r.value) for r in records) if keep(e)]
    finally:
        await consumer.stop()
    return kept


# --- measurements reported at the end of the run ---------------------------------------------------

REPORT: list[str] = []


def pytest_terminal_summary(terminalreporter) -> None:
    if REPORT:
        terminalreporter.section("sendstream measurements")
        for line in REPORT:
            terminalreporter.write_line(line)
