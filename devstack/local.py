"""`make run`: the whole system on one machine, each service its own process, stopped on Ctrl-C.

Starts (or finds) the broker and PostgreSQL (devstack/infra.py), then every service as
`python -m <module>` exactly as in production, plus a local SMTP sink. The integration tests use the
same `Stack` to run the services they test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import structlog

from devstack.infra import die_with_parent, ensure_infra, free_port
from services.common.logging import configure_logging
from services.common.secrets import new_key
from services.common.service import stop_event
from services.common.settings import LocalSettings

log = structlog.get_logger("sendstream.local")

SERVICES: dict[str, list[str]] = {
    "ingress": ["-m", "services.ingress"],
    "decide": ["-m", "services.decide"],
    "dispatch": ["-m", "services.dispatch"],
    "projections": ["-m", "projections"],
    "scheduler": ["-m", "services.scheduler"],
    "webhooks": ["-m", "services.webhooks"],
    "inbound": ["-m", "services.inbound"],
    "mailsync": ["-m", "services.mailsync"],
}
# Services with Kafka consumers: they serve /readyz on their metrics port once every consumer has joined its group.
CONSUMERS = ("decide", "dispatch", "projections", "webhooks", "mailsync")


class Stack:
    """A set of service processes sharing one environment."""

    def __init__(self, env: dict[str, str], log_dir: Path | None = None):
        self.env = {**os.environ, **env}
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}
        self.args: dict[str, list[str]] = dict(SERVICES)
        self.envs: dict[str, dict[str, str]] = {}
        self.metrics_ports: dict[str, int] = {}

    def start(
        self, name: str, args: list[str] | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        """Start `name` (a service of SERVICES, or any module given by `args`; remembered for restarts)."""
        if args is not None:
            self.args[name] = args
        if env is not None:
            self.envs[name] = env
        argv = [sys.executable, *self.args[name]]
        out = open(self.log_dir / f"{name}.log", "ab") if self.log_dir else None  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(
            argv,
            env={**self.env, **self.envs.get(name, {})},
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            preexec_fn=die_with_parent,
        )
        self.procs[name] = proc
        return proc

    def start_services(self, timeout: float = 90) -> None:
        """Every service of SERVICES: the consumers first, each with its own metrics port, and the rest
        once all of them have joined their groups. The API then answers only when everything a request
        causes will be read (a group that starts at the end of the log, like the webhooks', would
        otherwise miss what happened before it joined)."""
        for name in CONSUMERS:
            self.metrics_ports[name] = free_port()
            self.start(name, env={"SENDSTREAM_METRICS_PORT": str(self.metrics_ports[name])})
        for port in self.metrics_ports.values():
            wait_ready(f"http://127.0.0.1:{port}/readyz", timeout, self)
        for name in SERVICES:
            if name not in CONSUMERS:
                self.start(name)

    def signal(self, name: str, sig: int) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(sig)

    def stop(self, name: str, timeout: float = 15) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self, name: str) -> None:
        """SIGKILL: the crash case, no chance to clean up."""
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()

    def exited(self) -> dict[str, int]:
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}


def wait_ready(url: str, timeout: float, stack: Stack | None = None) -> None:
    """Poll `url` (normally /readyz) until it answers 200."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if stack and (dead := stack.exited()):
            raise RuntimeError(f"services exited during start-up: {dead}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout}s (last: {last})")


async def _run(settings: LocalSettings) -> None:
    started = time.monotonic()
    data = Path(settings.data_dir).resolve()
    infra = ensure_infra(data, kafka_port=settings.kafka_port, postgres_port=settings.postgres_port)
    env = {**infra.env}
    if not os.environ.get("SENDSTREAM_SECRET_KEYS"):  # a local key for relay passwords, kept with the data
        key_file = data / "secret.key"
        if not key_file.exists():
            key_file.write_text(new_key())
            key_file.chmod(0o600)
        env["SENDSTREAM_SECRET_KEYS"] = json.dumps([key_file.read_text().strip()])
    # Servers on this machine (the sink, webhook receivers, a local IMAP server) are what local development
    # points at, and may take a password without TLS; elsewhere both are refused. A value set wins.
    local = '["127.0.0.0/8", "::1/128"]'
    if not {"SENDSTREAM_EGRESS_ALLOWED_NETWORKS", "SENDSTREAM_WEBHOOK_ALLOWED_NETWORKS"} & os.environ.keys():
        env["SENDSTREAM_EGRESS_ALLOWED_NETWORKS"] = local
    if "SENDSTREAM_EGRESS_CLEARTEXT_AUTH_NETWORKS" not in os.environ:
        env["SENDSTREAM_EGRESS_CLEARTEXT_AUTH_NETWORKS"] = local
    # Inboxes created with only a name (as the inboxes dialect's own clients do) send through the sink.
    if "SENDSTREAM_INBOX_DEFAULT_RELAY" not in os.environ:
        env["SENDSTREAM_INBOX_DEFAULT_RELAY"] = json.dumps(
            {"host": "127.0.0.1", "port": settings.sink_port, "tls": "none"}
        )
    if "SENDSTREAM_INBOX_DEFAULT_DOMAIN" not in os.environ:
        env["SENDSTREAM_INBOX_DEFAULT_DOMAIN"] = "inboxes.sendstream.test"
    stack = Stack(env, log_dir=None)
    stop = stop_event()
    try:
        stack.start(
            "sink",
            ["-m", "devstack.sink", "--port", str(settings.sink_port), "--dir", str(data / "sink"),
             "--webhook-port", str(settings.webhook_sink_port)],
        )  # fmt: skip
        await asyncio.to_thread(stack.start_services, 60)
        port = os.environ.get("SENDSTREAM_HTTP_PORT", "8080")
        await asyncio.to_thread(wait_ready, f"http://127.0.0.1:{port}/readyz", 60, stack)
        log.info(
            "sendstream is running",
            api=f"http://127.0.0.1:{port}",
            smtp_sink=f"127.0.0.1:{settings.sink_port} (messages kept in {data / 'sink'})",
            inbound_smtp=f"127.0.0.1:{os.environ.get('SENDSTREAM_INBOUND_PORT', '2525')} (mail for hosted addresses)",
            webhook_sink=f"http://127.0.0.1:{settings.webhook_sink_port} (kept in {data / 'sink' / 'webhooks'})",
            kafka=infra.env["KAFKA_BOOTSTRAP_SERVERS"],
            database=infra.env["DATABASE_URL"],
            seconds_to_ready=round(time.monotonic() - started, 1),
        )
        while not stop.is_set():
            for name, code in stack.exited().items():
                log.error("service exited; restarting it", service=name, code=code)
                stack.start(name)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    await stop.wait()
    finally:
        log.info("stopping")
        stack.stop_all()
        infra.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args()
    settings = LocalSettings()
    configure_logging(settings.log_level, settings.log_format, service="local")
    asyncio.run(_run(settings))


if __name__ == "__main__":
    main()
