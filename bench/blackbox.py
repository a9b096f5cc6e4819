"""The black-box benchmark of issue 24: a running sendstream driven only over HTTP and SMTP, as a client.

It starts a fresh stack the way `make run` does (`python -m devstack.local` in a subprocess, with ports,
a data directory and an operator key of its own), or drives one already running (`--url`, `--key`).
Its own SMTP sink runs in its own process and records, for every message, the recipient (each send
has a recipient of its own, the token that matches a send to its delivery) and the time of its 250.
Then, in this order:

  idle        30 s after /readyz, 20 s of CPU of the whole stack with no traffic (only for a stack it
              started, or `--stack-pid`);
  set-up      an identity with a pool of N mailboxes relaying to the sink (the API's own limits on them
              raised), and a warm-up; the sink keeps one message as the stack sent it;
  latency 20  20 req/s for 10 s: HTTP and accept -> SMTP 250 latency;
  raw SMTP    that message, sent by this same load generator straight to the sink over C connections;
  throughput  S sends by C clients, closed loop: delivered per second from the first request to the last
              250, and its ratio to raw SMTP;
  CPU         100 req/s open loop: CPU per delivered message summed over every process of the stack;
  latency 200 200 req/s open loop: HTTP and accept -> SMTP 250 latency;
  overload    twice the measured capacity, open loop: every answer classified (delivered after a 202,
              shed with Retry-After and never delivered, or one of the violations).

Every CPU figure is a /proc delta (utime + stime, and the children each process reaped) of the stack's
process tree. The bench's client and sink are shown apart, never in the sum. Times of accept and 250
are time.time() of two processes on one machine. Exit status 0 whether or not the targets hold.
Usage: `make bench`, or `python -m bench.blackbox [--quick] [--url URL --key KEY]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import aiohttp
import aiosmtplib
import uvloop

from bench.cpu import stat_fields, tree_by_name, tree_sample
from bench.send_pipeline import pct
from devstack.infra import die_with_parent, free_port

GROUPS = (
    "broker", "postgres", "ingress", "decide", "dispatch", "projections", "webhooks", "scheduler",
    "mailsync", "inbound", "other",
)  # fmt: skip
RECIPIENT_DOMAIN = "example.test"
BENCH_DOMAIN = "blackbox.test"
# The stack's settings the bench sets beyond what `make run` sets itself: a domain its organization may
# use without proving it by DNS, and the per-hour request budgets (the identities dialect has no
# organization budget: its limits are the identity's daily cap and each mailbox's hourly and daily
# limits, which the bench raises through the API when it creates them).
RAISED_SETTINGS = {
    "SENDSTREAM_SHARED_DOMAINS": f'["{BENCH_DOMAIN}"]',
    "SENDSTREAM_MAILBOX_SENDS_PER_HOUR": "100000000",
    "SENDSTREAM_INBOX_SENDS_PER_HOUR": "100000000",
}


# --- The sink: its own process -----------------------------------------------------------------------


def sink_main(port: int, conn: Connection) -> None:
    """An aiosmtpd server on 127.0.0.1:port recording (recipient's local part, time of the 250) for
    each recipient of each message, and the first message's bytes; answers the driver over `conn`:
    ("since", i) -> records[i:], ("sample",) -> bytes or None, ("stop",)."""
    from aiosmtpd.controller import Controller  # noqa: PLC0415 - only the sink's process needs it

    records: list[tuple[str, float]] = []
    first: list[bytes] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope) -> str:
            now = time.time()
            if not first:
                first.append(envelope.original_content or envelope.content)
            for rcpt in envelope.rcpt_tos:
                records.append((rcpt.partition("@")[0].lower(), now))
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port, ready_timeout=10)
    controller.start()
    conn.send("ready")
    try:
        while True:
            msg = conn.recv()
            if msg[0] == "since":
                conn.send(records[msg[1] :])
            elif msg[0] == "sample":
                conn.send(first[0] if first else None)
            else:
                break
    finally:
        controller.stop()


class Sink:
    """The driver's side of the sink: deliveries by token (first 250 time) and how often each came."""

    def __init__(self) -> None:
        self.port = free_port()
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=sink_main, args=(self.port, child), daemon=True)
        self.proc.start()
        if not self.conn.poll(30) or self.conn.recv() != "ready":
            raise RuntimeError("the SMTP sink did not start")
        self.seen = 0
        self.at: dict[str, float] = {}
        self.times: Counter[str] = Counter()

    def refresh(self) -> None:
        self.conn.send(("since", self.seen))
        new = self.conn.recv()
        self.seen += len(new)
        for token, t in new:
            self.at.setdefault(token, t)
            self.times[token] += 1

    def sample(self) -> bytes | None:
        self.conn.send(("sample",))
        return self.conn.recv()

    def delivered(self, tokens: list[str]) -> int:
        self.refresh()
        return sum(1 for t in tokens if t in self.at)

    async def wait(self, tokens: list[str], timeout: float) -> int:
        """Until every token was delivered or `timeout` s passed; returns how many were."""
        deadline = time.monotonic() + timeout
        while (n := self.delivered(tokens)) < len(tokens) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return n

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(("stop",))
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()


# --- The stack: `make run`'s, in a subprocess ------------------------------------------------------


def group_of(pid: int) -> str:
    """What a process of the stack is, by its command line (GROUPS)."""
    try:
        words = [
            w.decode(errors="replace") for w in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if w
        ]
    except OSError:
        return "other"
    if not words:
        return "other"
    exe = os.path.basename(words[0])
    if "tansu" in words[0]:
        return "broker"
    if exe.startswith("postgres"):
        return "postgres"
    if "-m" in words[:-1]:
        module = words[words.index("-m") + 1].removeprefix("services.")
        if module in GROUPS:
            return module
    return "other"  # the launcher (devstack.local) and make run's own sink


def cpu_seconds(pid: int) -> float:
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields else 0.0


@dataclass
class Stack:
    """A `make run` stack started by the bench, or one found at --url (then `proc` is None)."""

    base: str
    key: str
    pid: int | None = None
    proc: subprocess.Popen | None = None
    data: Path | None = None
    ready_at: float = 0.0  # time.monotonic() when /readyz first answered 200
    settings: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, log_level: str) -> Stack:
        data = Path(tempfile.mkdtemp(prefix="sendstream-blackbox-"))
        data.chmod(0o755)  # PostgreSQL may run as another user, and keeps its cluster below it
        http_port = free_port()
        key = "sk_live_" + secrets.token_urlsafe(16)
        own = {
            "SENDSTREAM_DATA_DIR": str(data),
            "SENDSTREAM_HTTP_PORT": str(http_port),
            "SENDSTREAM_INBOUND_PORT": str(free_port()),
            "SENDSTREAM_SINK_PORT": str(free_port()),
            "SENDSTREAM_WEBHOOK_SINK_PORT": str(free_port()),
            "SENDSTREAM_KAFKA_PORT": str(free_port()),
            "SENDSTREAM_POSTGRES_PORT": str(free_port()),
            "SENDSTREAM_KAFKA_TOPIC_PREFIX": f"bb{uuid.uuid4().hex[:6]}",
            "SENDSTREAM_BOOTSTRAP_API_KEY": key,
            "SENDSTREAM_LOG_LEVEL": log_level,
            "SENDSTREAM_LOG_FORMAT": "json",
            **RAISED_SETTINGS,
        }
        # A broker or database of another stack (a test session's, say) must not be found and shared.
        inherited = {
            k: v
            for k, v in os.environ.items()
            if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")
            and k
            not in ("SENDSTREAM_KAFKA_BOOTSTRAP_SERVERS", "SENDSTREAM_DATABASE_URL", "SENDSTREAM_SECRET_KEYS")
        }
        log = open(data / "stack.log", "ab")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(
            [sys.executable, "-m", "devstack.local"],
            env={**inherited, **own},
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        stack = cls(f"http://127.0.0.1:{http_port}", key, proc.pid, proc, data, settings=own)
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the stack exited with {proc.returncode} during start-up; see {data}/stack.log"
                )
            with contextlib.suppress(OSError), urllib.request.urlopen(stack.base + "/readyz", timeout=2) as r:
                if r.status == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the stack was not ready after 180 s; see {data}/stack.log")
            time.sleep(0.2)
        stack.ready_at = time.monotonic()
        return stack

    def stop(self, keep: bool) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.data and not keep:
            shutil.rmtree(self.data, ignore_errors=True)

    def cpu(self) -> dict[int, tuple[str, float]]:
        return tree_sample(self.pid, group_of) if self.pid else {}


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (every core; /proc/stat)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class CpuPhase:
    """CPU of the stack's tree by group, of the bench's own client and sink, and of the rest of the
    machine (other people's work on a shared machine: noise in every figure), over a `with` block."""

    def __init__(self, stack: Stack, sink: Sink):
        self.stack, self.sink = stack, sink

    def __enter__(self) -> CpuPhase:
        self.before = self.stack.cpu()
        self.own_before = (cpu_seconds(os.getpid()), cpu_seconds(self.sink.proc.pid))
        self.busy_before = machine_busy()
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.monotonic() - self.started
        self.busy = machine_busy() - self.busy_before
        self.after = self.stack.cpu()
        self.client = cpu_seconds(os.getpid()) - self.own_before[0]
        self.sink_cpu = cpu_seconds(self.sink.proc.pid) - self.own_before[1]
        used = tree_by_name(self.before, self.after)
        self.groups = {g: max(used.get(g, 0.0), 0.0) for g in GROUPS}
        self.total = sum(self.groups.values())
        self.others = max(self.busy - self.total - self.client - self.sink_cpu, 0.0)

    def machine(self) -> str:
        stack = f"the stack {self.total / self.wall:.2f}, " if self.stack.pid else ""
        return (
            f"    machine ({os.cpu_count()} cores) busy {self.busy / self.wall:.2f} cores: {stack}the bench "
            f"{(self.client + self.sink_cpu) / self.wall:.2f}, everything else {self.others / self.wall:.2f}"
        )

    def table(self, messages: int | None, indent: str = "    ") -> str:
        """Per group: cores used over the phase, and ms per message when `messages` is given."""
        rows = [*((g, s) for g, s in self.groups.items()), ("ALL (the stack)", self.total)]
        rows += [("bench client (apart)", self.client), ("bench sink (apart)", self.sink_cpu)]
        rows += [("rest of the machine", self.others)]
        out = []
        for name, seconds in rows:
            line = f"{indent}{name:<22} {seconds / self.wall:6.3f} cores"
            if messages and name != "rest of the machine":
                line += f"   {seconds / messages * 1000:7.2f} ms/message"
            out.append(line)
        return "\n".join(out)


# --- The client ------------------------------------------------------------------------------------


@dataclass
class Answer:
    token: str
    status: int | None  # None: no answer (timeout or connection error)
    retry_after: bool
    started: float  # time.perf_counter() when the request started
    latency: float  # seconds until the answer (or the timeout)
    answered_at: float  # time.time() when the answer arrived: the accept time of a 202
    late: float = 0.0  # how far behind schedule it started (open loop)
    error: str = ""


class Driver:
    def __init__(self, session: aiohttp.ClientSession, base: str, key: str, run: str):
        self.session, self.base, self.key, self.run = session, base, key, run
        self.headers = {"Authorization": f"Bearer {key}"}
        self.handle = ""
        self.text = "Hi Morgan, I wanted to follow up on our conversation about the pilot. " * 8

    async def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        async with self.session.request(method, self.base + path, json=body, headers=self.headers) as r:
            return r.status, await r.json(content_type=None)

    async def set_up(self, mailboxes: int, domain: str, sink_port: int) -> None:
        self.handle = f"bench-{self.run}@{domain}"
        status, body = await self.call(
            "POST", "/v1/identities", {"handle": self.handle, "dailyCap": 1_000_000}
        )
        if status != 201:
            raise RuntimeError(f"creating the identity: {status} {body}")
        for i in range(mailboxes):
            status, body = await self.call(
                "POST",
                f"/v1/identities/{self.handle}/mailboxes",
                {
                    "email": f"sender{i}-{self.run}@{domain}",
                    "hourlyLimit": 1_000_000,
                    "smtp": {"host": "127.0.0.1", "port": sink_port, "tls": "none"},
                },
            )
            if status != 201:
                raise RuntimeError(f"creating mailbox {i}: {status} {body}")

    def token(self, phase: str, i: int) -> str:
        return f"{self.run}.{phase}.{i}"

    async def send(self, token: str, timeout: float, late: float = 0.0) -> Answer:
        body = {"to": f"{token}@{RECIPIENT_DOMAIN}", "subject": f"Pilot {token}", "text": self.text}
        started = time.perf_counter()
        try:
            async with self.session.post(
                f"{self.base}/v1/identities/{self.handle}/send",
                json=body,
                headers=self.headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as r:
                await r.read()
                return Answer(
                    token, r.status, "Retry-After" in r.headers, started, time.perf_counter() - started,
                    time.time(), late,
                )  # fmt: skip
        except (TimeoutError, aiohttp.ClientError) as exc:
            return Answer(
                token, None, False, started, time.perf_counter() - started, time.time(), late, repr(exc)
            )

    async def closed_loop(self, phase: str, n: int, clients: int, timeout: float) -> list[Answer]:
        """n sends by `clients` concurrent clients, each sending its next as soon as it has an answer."""
        counter = iter(range(n))
        answers: list[Answer] = []

        async def client() -> None:
            for i in counter:
                answers.append(await self.send(self.token(phase, i), timeout))

        await asyncio.gather(*(client() for _ in range(clients)))
        return answers

    async def open_loop(self, phase: str, rate: float, seconds: float, timeout: float) -> list[Answer]:
        """Open loop: request i starts at i/rate s, whatever the earlier ones are doing."""
        tasks = []
        started = time.perf_counter()
        for i in range(int(rate * seconds)):
            due = started + i / rate
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            late = max(time.perf_counter() - due, 0.0)
            tasks.append(asyncio.create_task(self.send(self.token(phase, i), timeout, late)))
        return list(await asyncio.gather(*tasks))


async def raw_smtp(port: int, message: bytes, n: int, connections: int, tokens: list[str]) -> float:
    """`message` sent n times straight to the sink over `connections` persistent connections, one
    recipient per message (`tokens`); msg/s from the first MAIL to the last 250."""
    todo = iter(tokens[:n])

    async def connection() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        for token in todo:
            await client.sendmail("sender@bench.test", [f"{token}@{RECIPIENT_DOMAIN}"], message)
        await client.quit()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    return n / (time.perf_counter() - started)


# --- Figures ---------------------------------------------------------------------------------------


def ms(values: list[float]) -> str:
    return f"p50 {pct(values, 50) * 1000:8.1f} ms   p99 {pct(values, 99) * 1000:8.1f} ms   ({len(values)})"


def statuses(answers: list[Answer]) -> str:
    counts = Counter(str(a.status) if a.status is not None else "no answer" for a in answers)
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))


@dataclass
class Latency:
    http: list[float]
    accept_to_250: list[float]
    answers: list[Answer]
    delivered: int
    late_p99: float


async def latency_phase(driver: Driver, sink: Sink, phase: str, rate: float, seconds: float, args) -> Latency:
    answers = await driver.open_loop(phase, rate, seconds, args.timeout)
    ok = [a for a in answers if a.status == 202]
    delivered = await sink.wait([a.token for a in ok], args.grace)
    return Latency(
        http=[a.latency for a in ok],
        accept_to_250=[sink.at[a.token] - a.answered_at for a in ok if a.token in sink.at],
        answers=answers,
        delivered=delivered,
        late_p99=pct([a.late for a in answers], 99),
    )


def latency_lines(r: Latency) -> str:
    return (
        f"    answers: {statuses(r.answers)}; delivered {r.delivered} of the 202s"
        f" (client started requests up to {r.late_p99 * 1000:.0f} ms late, p99)\n"
        f"    HTTP latency (202s)           {ms(r.http)}\n"
        f"    accept -> SMTP 250            {ms(r.accept_to_250)}"
    )


@dataclass
class Overload:
    rate: float
    answers: list[Answer]
    classes: dict[str, int]
    p99: float
    duplicates: int


LOST = "LOST: 202, never delivered"


def is_shed(a: Answer) -> bool:
    return a.status in (429, 503) and a.retry_after


def classify(answers: list[Answer], sink: Sink) -> Counter[str]:
    """Each answer's class. Those in capitals break issue 24's rule: an answer is 202 and its mail is
    delivered, or it is shed (429/503 with Retry-After) and its mail never is."""
    c: Counter[str] = Counter()
    for a in answers:
        delivered = a.token in sink.at
        if a.status == 202:
            c["202, delivered" if delivered else LOST] += 1
            continue
        if is_shed(a):
            what = f"shed ({a.status} with Retry-After)"
        elif a.status is None:
            what = "no answer (timeout)"
        else:
            what = f"ERROR: {a.status} {'with' if a.retry_after else 'without'} Retry-After"
        c[f"DELIVERED after {what.removeprefix('ERROR: ')}" if delivered else f"{what}, not delivered"] += 1
    return c


# --- The run ---------------------------------------------------------------------------------------


def say(text: str = "") -> None:
    print(text, flush=True)


@dataclass
class Bench:
    args: argparse.Namespace
    stack: Stack
    sink: Sink
    driver: Driver | None = None
    summary: list[tuple[str, str, bool | None]] = field(default_factory=list)

    def holds(self, name: str, figure: str, held: bool | None) -> None:
        self.summary.append((name, figure, held))

    def preamble(self) -> None:
        stack, args = self.stack, self.args
        say(f"\nsendstream black-box bench: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
        say(f"  load average at the start {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if stack.proc:
            say(
                f"  stack: `python -m devstack.local` (pid {stack.pid}), started by the bench, data in {stack.data}"
            )
            say(
                f"  log level {stack.settings['SENDSTREAM_LOG_LEVEL']}; egress to 127.0.0.0/8: make run's default"
            )
            say(f"  settings beyond make run's: {', '.join(f'{k}={v}' for k, v in RAISED_SETTINGS.items())}")
        else:
            measured = f"its tree from pid {stack.pid}" if stack.pid else "not measured (no --stack-pid)"
            say(f"  stack: {stack.base}, already running; CPU: {measured}")
        say(f"  limits raised through the API: identity dailyCap 1000000; {args.mailboxes} mailboxes,")
        say("    each hourlyLimit 1000000 and no daily limit")
        say(f"  sink: its own process (pid {self.sink.proc.pid}) on 127.0.0.1:{self.sink.port}")

    async def idle(self) -> None:
        """First, before any traffic: the stack's CPU with nothing to do."""
        if not self.stack.pid:
            return
        if self.stack.proc:
            wait = max(self.stack.ready_at + self.args.idle_after - time.monotonic(), 0)
            say(
                f"\n[idle] {self.args.idle:.0f} s with no traffic, from {self.args.idle_after:.0f} s after /readyz"
            )
            await asyncio.sleep(wait)
        with CpuPhase(self.stack, self.sink) as cpu:
            await asyncio.sleep(self.args.idle)
        say(cpu.table(None))
        cores = cpu.total / cpu.wall
        self.holds("idle CPU of the whole stack", f"{cores:.3f} cores (target <= 0.02)", cores <= 0.02)

    async def set_up(self) -> bytes:
        """The identity and its mailboxes, a warm-up; returns a message as the stack sent it."""
        args, driver = self.args, self.driver
        await driver.set_up(args.mailboxes, args.domain, self.sink.port)
        warm = await driver.closed_loop("warm", args.warmup, args.clients, args.timeout)
        got = await self.sink.wait([a.token for a in warm], 60)
        say(f"\n[set-up] identity {driver.handle} with {args.mailboxes} mailboxes")
        say(f"    warm-up: {args.warmup} sends: {statuses(warm)}; {got} delivered")
        if (message := self.sink.sample()) is None:
            raise RuntimeError("no message reached the sink during the warm-up; see the stack's log")
        return message

    async def latency(self, phase: str, rate: float, seconds: float) -> Latency:
        with CpuPhase(self.stack, self.sink) as cpu:
            r = await latency_phase(self.driver, self.sink, phase, rate, seconds, self.args)
        say(f"\n[latency] {rate:.0f} req/s for {seconds:.0f} s, open loop")
        say(latency_lines(r))
        say(cpu.machine())
        return r

    async def raw(self, message: bytes) -> float:
        args = self.args
        tokens = [self.driver.token("raw", i) for i in range(args.raw)]
        with CpuPhase(self.stack, self.sink) as cpu:
            rate = await raw_smtp(self.sink.port, message, args.raw, args.clients, tokens)
        await self.sink.wait(tokens, 10)
        say(
            f"\n[raw SMTP] {args.raw} messages of {len(message)} bytes (one the stack sent) straight to the sink,"
        )
        say(f"    {args.clients} connections, the same load generator: {rate:.0f} msg/s")
        say(cpu.machine())
        return rate

    async def throughput(self, raw: float) -> float:
        """Closed loop; returns what reached the sink per second, from the first request to the last 250."""
        args = self.args
        started = time.time()
        with CpuPhase(self.stack, self.sink) as cpu:
            answers = await self.driver.closed_loop("tp", args.sends, args.clients, args.timeout)
            ok = [a for a in answers if a.status == 202]
            delivered = await self.sink.wait([a.token for a in ok], args.grace + 60)
        last = max((self.sink.at[a.token] for a in ok if a.token in self.sink.at), default=time.time())
        rate = delivered / max(last - started, 1e-9)
        say(f"\n[throughput] {args.sends} sends by {args.clients} clients, closed loop: {statuses(answers)}")
        say(
            f"    delivered {delivered} in {last - started:.1f} s = {rate:.0f} msg/s = {rate / raw:.2f} x raw SMTP"
        )
        say(f"    HTTP latency (202s)           {ms([a.latency for a in ok])}")
        say(cpu.machine())
        self.holds(
            f"throughput, {args.mailboxes} mailboxes, {args.clients} clients",
            f"{rate:.0f} msg/s = {rate / raw:.2f} x raw SMTP {raw:.0f} msg/s (target >= 0.45)",
            rate / raw >= 0.45,
        )
        return rate

    async def cpu(self) -> None:
        """CPU per delivered message at a fixed rate, over the requests' seconds and the drain after them."""
        args = self.args
        if not self.stack.pid:
            return
        with CpuPhase(self.stack, self.sink) as cpu:
            answers = await self.driver.open_loop("c100", args.cpu_rate, args.seconds, args.timeout)
            delivered = await self.sink.wait([a.token for a in answers if a.status == 202], args.grace)
        say(f"\n[CPU] {args.cpu_rate:.0f} req/s for {args.seconds:.0f} s, open loop: {statuses(answers)}")
        say(f"    {delivered} delivered; CPU over {cpu.wall:.1f} s, until the last 250")
        say(cpu.table(delivered))
        per = cpu.total / max(delivered, 1) * 1000
        self.holds(f"CPU per message at {args.cpu_rate:.0f} req/s", f"{per:.2f} ms (target <= 4)", per <= 4)

    async def overload(self, capacity: float) -> None:
        args = self.args
        rate = 2 * capacity
        with CpuPhase(self.stack, self.sink) as cpu:
            answers = await self.driver.open_loop("over", rate, args.seconds, args.timeout)
        tokens = [a.token for a in answers]
        await self.sink.wait(
            tokens, args.grace
        )  # a shed request is never delivered: this waits the grace out
        classes = classify(answers, self.sink)
        twice = sum(1 for t in tokens if self.sink.times[t] > 1)
        p99 = pct([a.latency for a in answers], 99)
        late = pct([a.late for a in answers], 99) * 1000
        say(
            f"\n[overload] {rate:.0f} req/s (2 x {capacity:.0f}) for {args.seconds:.0f} s, open loop: {len(answers)} requests"
        )
        say(
            f"    client timeout {args.timeout:.0f} s, grace {args.grace:.0f} s; requests started up to {late:.0f} ms late (p99)"
        )
        for name, n in classes.most_common():
            say(f"    {name:<52} {n:6d}")
        say(f"    {'DELIVERED more than once':<52} {twice:6d}")
        say(
            f"    every answer's latency ({args.timeout:.0f} s for a timeout) {ms([a.latency for a in answers])}"
        )
        say(cpu.machine() + " (while the requests were made)")
        lost = classes[LOST]
        wrong = sum(n for k, n in classes.items() if k.startswith("DELIVERED after"))
        errors = sum(1 for a in answers if a.status not in (None, 202) and not is_shed(a))
        self.holds(
            f"overload at {rate:.0f} req/s",
            f"{lost} lost, {wrong} delivered without 202, {errors} errors not shed, {twice} sent twice, "
            f"answer p99 {p99 * 1000:.0f} ms (<= 1000)",
            lost == 0 and wrong == 0 and errors == 0 and twice == 0 and p99 <= 1.0,
        )

    def print_summary(self) -> None:
        smoke = " (--quick: a smoke run, not the targets' conditions)" if self.args.quick else ""
        say(f"\nsummary: issue 24's figures, this run{smoke}")
        for name, figure, held in self.summary:
            mark = "n/a " if held is None else ("PASS" if held else "FAIL")
            say(f"  [{mark}] {name:<40} {figure}")


async def run(args: argparse.Namespace, stack: Stack, sink: Sink) -> None:
    bench = Bench(args, stack, sink)
    bench.preamble()
    await bench.idle()
    connector = aiohttp.TCPConnector(limit=args.max_connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        bench.driver = Driver(session, stack.base, stack.key, uuid.uuid4().hex[:6])
        message = await bench.set_up()
        low = await bench.latency("r20", args.low_rate, args.low_seconds)
        bench.holds(
            f"latency at {args.low_rate:.0f} req/s",
            f"HTTP p99 {pct(low.http, 99) * 1000:.0f} ms, accept->250 p99 "
            f"{pct(low.accept_to_250, 99) * 1000:.0f} ms (no worse than before)",
            None,
        )
        raw = await bench.raw(message)
        capacity = await bench.throughput(raw)
        await bench.cpu()
        high = await bench.latency("r200", args.rate, args.seconds)
        h99, a99 = pct(high.http, 99), pct(high.accept_to_250, 99)
        complete = all(a.status == 202 for a in high.answers) and high.delivered == len(high.answers)
        bench.holds(
            f"latency at {args.rate:.0f} req/s",
            f"HTTP p99 {h99 * 1000:.0f} ms (<= 100), accept->250 p99 {a99 * 1000:.0f} ms (<= 500)"
            + (
                ""
                if complete
                else f"; NOT all 202 and delivered: {statuses(high.answers)}, {high.delivered} delivered"
            ),
            h99 <= 0.1 and a99 <= 0.5 and complete,
        )
        await bench.overload(capacity)
    bench.print_summary()


QUICK = {
    "sends": 100, "raw": 200, "warmup": 20, "seconds": 3, "low_seconds": 2, "idle_after": 0, "idle": 2, "grace": 15,
}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running stack's API (default: start a fresh `make run` stack)")
    parser.add_argument("--key", help="its operator or admin key (with --url)")
    parser.add_argument(
        "--stack-pid", type=int, help="with --url: the pid whose process tree is the stack (for CPU)"
    )
    parser.add_argument(
        "--domain",
        default=BENCH_DOMAIN,
        help="domain of the bench's identity and mailboxes (one the stack lets it use)",
    )
    parser.add_argument("--mailboxes", type=int, default=4)
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients and raw SMTP connections")
    parser.add_argument("--sends", type=int, default=2000, help="sends of the throughput phase")
    parser.add_argument("--raw", type=int, default=2000, help="messages of the raw SMTP phase")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--cpu-rate", type=float, default=100)
    parser.add_argument("--rate", type=float, default=200, help="the latency phase's rate")
    parser.add_argument(
        "--seconds", type=float, default=20, help="length of the CPU, latency and overload phases"
    )
    parser.add_argument("--low-rate", type=float, default=20)
    parser.add_argument("--low-seconds", type=float, default=10)
    parser.add_argument(
        "--idle-after", type=float, default=30, help="idle phase starts this long after /readyz"
    )
    parser.add_argument("--idle", type=float, default=20, help="length of the idle phase")
    parser.add_argument("--timeout", type=float, default=10, help="client timeout of one request")
    parser.add_argument("--grace", type=float, default=30, help="how long a 202 may take to reach the sink")
    parser.add_argument("--max-connections", type=int, default=4096)
    parser.add_argument("--log-level", default="INFO", help="the stack's (make run's default: INFO)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the started stack's data directory and logs"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: small counts, a few seconds per phase"
    )
    if parser.parse_known_args()[0].quick:  # smaller defaults; what the command line says still wins
        parser.set_defaults(**QUICK)
    args = parser.parse_args()
    if bool(args.url) != bool(args.key):
        parser.error("--url and --key go together")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # an open loop past capacity holds many sockets

    sink = Sink()
    stack = None
    ok = False
    try:
        stack = (
            Stack(args.url.rstrip("/"), args.key, args.stack_pid) if args.url else Stack.start(args.log_level)
        )
        uvloop.run(run(args, stack, sink))
        ok = True
    finally:
        sink.stop()
        if stack is not None:
            if not ok and stack.data:
                print(f"the stack's logs are kept in {stack.data}", file=sys.stderr)
            stack.stop(keep=args.keep or not ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
