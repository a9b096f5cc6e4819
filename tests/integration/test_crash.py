"""Crash safety: SIGKILL a consumer in the middle of 500 sends, restart it, lose nothing, double nothing avoidable."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from devstack.infra import free_port, start_postgres
from devstack.local import Stack, wait_ready
from services.common.settings import DispatchSettings, WebhookSettings
from tests.conftest import REPORT, Api, Receiver, Relay, eventually, new_org

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

TOTAL = 500


async def identity_for(api: Api, relay: Relay) -> str:
    handle = f"crash-{uuid.uuid4().hex[:8]}@example.test"
    assert (await api.call("POST", "/v1/identities", {"handle": handle, "dailyCap": 10_000}))[0] == 201
    status, body, _ = await api.call(
        "POST",
        f"/v1/identities/{handle}/mailboxes",
        {
            "email": f"sender-{uuid.uuid4().hex[:6]}@tryacme.test",
            "smtp": relay.smtp_settings(),
            "hourlyLimit": 10_000,
        },
    )
    assert status == 201, body
    return handle


def children(parent: int) -> list[int]:
    """The processes whose parent is `parent` (PostgreSQL's backends each lead their own process group,
    so killing the postmaster's group would leave them running)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if ppid == parent:
            found.append(int(stat.parent.name))
    return found


async def send_all(api: Api, handle: str, ids: list[str], concurrency: int = 16) -> list[int]:
    """Send TOTAL messages; every request is retried with its Idempotency-Key until it gets an answer."""
    queue = list(enumerate(ids))
    statuses: list[int] = [0] * len(ids)

    async def worker() -> None:
        while queue:
            i, rid = queue.pop(0)
            while True:
                async with api.session.post(
                    f"{api.base}/v1/identities/{handle}/send",
                    json={"to": f"lead-{i}@example.test", "subject": f"Step {i}", "text": "Hi"},
                    headers={"Authorization": f"Bearer {api.key}", "Idempotency-Key": rid},
                ) as r:
                    await r.read()
                    if r.status in (202, 429):
                        statuses[i] = r.status
                        break
                await asyncio.sleep(0.2)  # 409 in flight / 503: retry the same key

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


KILLS_AT = (0.20, 0.45, 0.70)  # fractions of TOTAL delivered when the service is SIGKILLed and restarted


async def kill_and_restart_midway(stack: Stack, service: str, relay: Relay) -> float:
    """SIGKILL `service` each time the relay has seen another share of the sends, restarting it at once."""
    killed = 0.0
    for share in KILLS_AT:
        while len(relay.received) < TOTAL * share:
            await asyncio.sleep(0.01)
        stack.kill(service)
        killed = time.monotonic()
        stack.start(service)
    return killed


async def run_crash(api: Api, relay: Relay, stack: Stack, service: str) -> None:
    handle = await identity_for(api, relay)
    keys = [str(uuid.uuid4()) for _ in range(TOTAL)]
    started = time.monotonic()
    killer = asyncio.create_task(kill_and_restart_midway(stack, service, relay))
    statuses = await send_all(api, handle, keys)
    killed = await killer
    assert statuses.count(202) == TOTAL
    deadline = time.monotonic() + 120
    while len({r.message["Message-ID"] for r in relay.received}) < TOTAL and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    per_message = Counter(r.message["Message-ID"] for r in relay.received)
    per_recipient = Counter(r.rcpt_tos[0] for r in relay.received)
    lost = TOTAL - len(per_recipient)
    duplicates = sum(n - 1 for n in per_message.values())
    recovered = time.monotonic() - killed
    REPORT.append(
        f"SIGKILL {service} {len(KILLS_AT)}x (at {', '.join(f'{k:.0%}' for k in KILLS_AT)} of {TOTAL} sends): "
        f"lost {lost}, duplicates {duplicates} (relay 250 before the outcome record), "
        f"all delivered {recovered:.1f}s after the last kill, "
        f"{time.monotonic() - started:.1f}s in all"
    )
    assert lost == 0
    assert len(per_recipient) == len(per_message) == TOTAL  # one Message-ID per send, stable across attempts
    return duplicates


async def test_sigkill_dispatch_mid_stream_loses_nothing(api: Api, relay: Relay, stack: Stack) -> None:
    """Dispatch killed 3x mid-stream: every message arrives; a duplicate only for a send caught between 250 and record.

    Dispatch lets at most twice smtp_pool_size messages per mailbox be between their 250 and their record.
    """
    duplicates = await run_crash(api, relay, stack, "dispatch")
    assert duplicates <= 2 * DispatchSettings().smtp_pool_size * len(KILLS_AT)


async def test_sigkill_dispatch_while_a_slow_send_is_handed_over_loses_nothing(
    api: Api, relay: Relay, stack: Stack, db: asyncpg.Pool
) -> None:
    """Dispatch dies while a send it handed to a lease still waits on a slow relay: the lease falls due
    (the transaction time limit and a margin after the hand-over) and the send is made again."""
    relay.pauses = [2.5]  # longer than the 1 s patience, within the 3 s SMTP timeout
    handle = await identity_for(api, relay)
    status, body, _ = await api.call(
        "POST", f"/v1/identities/{handle}/send", {"to": "lease@example.test", "subject": "s", "text": "t"}
    )
    assert status == 202, body
    message_id = uuid.UUID(body["messages"][0]["id"].strip("<>").split("@")[0])  # <message id@domain>

    async def handed_over() -> bool:
        return bool(await db.fetchval(
            """SELECT count(*) FROM processed_events p JOIN event_archive m ON m.event_id = p.event_id
                WHERE p.consumer = 'dispatch' AND p.outputs = '[]'::jsonb
                  AND m.message_ids @> ARRAY[$1]::uuid[] AND m.type = 'SendAccepted'""",
            message_id,
        ))  # fmt: skip

    await eventually(handed_over, timeout=20)
    assert relay.pausing == 1
    stack.kill("dispatch")
    killed = time.monotonic()
    stack.start("dispatch")

    async def sent() -> bool:
        return await db.fetchval("SELECT status FROM messages WHERE id = $1", message_id) == "sent"

    await eventually(sent, timeout=90, interval=0.5)
    REPORT.append(
        f"SIGKILL dispatch with a send handed over to its lease: delivered {time.monotonic() - killed:.1f}s "
        f"after the kill; the relay took it {len(relay.received)}x (twice only if it kept the one it was "
        "holding when dispatch died)"
    )
    assert 1 <= len(relay.received) <= 2
    assert len({r.message["Message-ID"] for r in relay.received}) == 1


async def test_sigkill_decide_mid_stream_loses_and_doubles_nothing(
    api: Api, relay: Relay, stack: Stack
) -> None:
    """Decide killed 3x mid-stream: its decisions are committed with their state, so nothing is lost or doubled."""
    duplicates = await run_crash(api, relay, stack, "decide")
    assert duplicates == 0


async def test_decision_timeout_answers_queued_and_the_send_still_happens_once(
    api: Api, relay: Relay, stack: Stack
) -> None:
    """With decide down the API answers 202 `queued` (never an error), and the send goes out once decide is back."""
    handle = await identity_for(api, relay)
    port = free_port()
    stack.start("ingress-fast", ["-m", "services.ingress"],
                env={"SENDSTREAM_HTTP_PORT": str(port), "SENDSTREAM_DECISION_TIMEOUT_S": "0.3"})  # fmt: skip
    stack.stop("decide")
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", 60)
        fast = Api(api.session, f"http://127.0.0.1:{port}", api.key)
        status, body, _ = await fast.call(
            "POST",
            f"/v1/identities/{handle}/send",
            {"to": "later@example.test", "subject": "Queued", "text": "Hi"},
        )
        assert status == 202, body
        [m] = body["messages"]
        assert m["status"] == "queued" and m["convId"].startswith("conv_") and m["id"] is None
        assert body["accepted"] == 1 and body["rejected"] == 0
    finally:
        stack.start("decide")
        stack.stop("ingress-fast")
    [got] = await relay.wait_for(1, timeout=30)
    assert got.rcpt_tos == ["later@example.test"]
    await asyncio.sleep(1)
    assert len(relay.received) == 1


async def test_sigkill_webhooks_with_deliveries_pending_loses_none(
    api: Api, relay: Relay, stack: Stack, receiver: Receiver
) -> None:
    """Webhooks killed while 200 deliveries are pending, and events keep happening while it is down:
    after the restart every one arrives, at least once, with its webhook-id."""
    total, slow_s = 200, 0.2
    receiver.slow("/hooks", slow_s)  # 8 in flight at 0.2 s each: the 200 take seconds, so many are pending
    status, _, _ = await api.call(
        "POST", "/v1/webhooks", {"url": receiver.url("/hooks"), "events": ["message.sent"]}
    )
    assert status == 201
    handle = await identity_for(api, relay)

    async def send(first: int, count: int) -> None:
        for start in range(first, first + count, 50):
            to = [f"lead-{i}@example.test" for i in range(start, min(start + 50, first + count))]
            status, body, _ = await api.call(
                "POST", f"/v1/identities/{handle}/send", {"to": to, "subject": "Hi", "text": "Hi"}
            )
            assert status == 202 and body["accepted"] == len(to), body

    await send(0, total // 2)
    await receiver.wait_for("/hooks", 30)
    stack.kill("webhooks")
    killed = time.monotonic()
    arrived_before = len(receiver.at("/hooks"))
    await send(total // 2, total // 2)  # while it is down
    await relay.wait_for(total, timeout=60)  # every MessageSent has happened
    stack.start("webhooks")

    def distinct() -> int:
        return len({h.headers["webhook-id"] for h in receiver.at("/hooks")})

    deadline = time.monotonic() + 90
    while distinct() < total and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    recovered = time.monotonic() - killed
    hooks = receiver.at("/hooks")
    messages = {h.json["data"]["messageId"] for h in hooks}
    duplicates = len(hooks) - distinct()
    REPORT.append(
        f"SIGKILL webhooks with {total - arrived_before} of {total} deliveries pending (half the events "
        f"happening while it was down): lost {total - distinct()}, duplicates {duplicates} (requests in flight "
        f"at the kill, sent again after their lease), all arrived {recovered:.1f}s after the kill"
    )
    assert distinct() == len(messages) == total
    assert duplicates <= WebhookSettings().webhook_endpoint_concurrency  # only those in flight at the kill


async def test_sigkill_postgresql_mid_stream_loses_nothing(
    service_env: dict, relay: Relay, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """PostgreSQL itself SIGKILLed mid-stream (durable settings) and started again: every accepted send
    arrives, as it was answered, once. decide commits without waiting for the WAL flush, so the crash
    may lose decisions already answered; they are recorded again before anything acts on them. The
    relay's answers to sends in flight at the crash are kept by dispatch until they can be recorded."""
    data = tmp_path_factory.mktemp("crash-pg")
    data.chmod(0o755)  # embedded PostgreSQL runs unprivileged when we are root
    port = free_port()
    url, stop = start_postgres(data / "pg", port, durable=True, log_path=data / "postgres.log")
    logs = tmp_path_factory.mktemp("crash-pg-logs")
    env = {
        **service_env,
        "DATABASE_URL": url,
        "SENDSTREAM_KAFKA_TOPIC_PREFIX": f"pgcrash{uuid.uuid4().hex[:6]}",
        "SENDSTREAM_HTTP_PORT": str(free_port()),
        "SENDSTREAM_INBOUND_PORT": str(free_port()),
    }
    stack = Stack(env, log_dir=logs)
    try:
        stack.start_services(90)
        wait_ready(f"http://127.0.0.1:{env['SENDSTREAM_HTTP_PORT']}/readyz", 90, stack)
        async with aiohttp.ClientSession() as session:
            operator = Api(session, f"http://127.0.0.1:{env['SENDSTREAM_HTTP_PORT']}",
                           env["SENDSTREAM_BOOTSTRAP_API_KEY"])  # fmt: skip
            api = await new_org(operator)
            handle = await identity_for(api, relay)
            conn = await asyncpg.connect(url)
            pid_file = Path(await conn.fetchval("SHOW data_directory")) / "postmaster.pid"
            await conn.close()
            postmaster = int(pid_file.read_text().split()[0])
            keys = [str(uuid.uuid4()) for _ in range(TOTAL)]
            sending = asyncio.create_task(send_all(api, handle, keys))
            while len(relay.received) < TOTAL * 0.4:
                await asyncio.sleep(0.01)
            for pid in [postmaster, *children(postmaster)]:  # the server and every backend, mid-write
                os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            stop()  # reaps it
            url, stop = start_postgres(data / "pg", port, durable=True, log_path=data / "postgres.log")
            statuses = await sending
        assert statuses.count(202) == TOTAL
        deadline = time.monotonic() + 120
        while len({r.rcpt_tos[0] for r in relay.received}) < TOTAL and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        per_message = Counter(r.message["Message-ID"] for r in relay.received)
        per_recipient = Counter(r.rcpt_tos[0] for r in relay.received)
        recorded_again = sum(
            json.loads(line).get("requests", 0)
            for line in (logs / "decide.log").read_text().splitlines()
            if "recording them again" in line
        )
        REPORT.append(
            f"SIGKILL PostgreSQL at 40% of {TOTAL} sends: lost {TOTAL - len(per_recipient)}, duplicates "
            f"{sum(n - 1 for n in per_message.values())}, "
            f"{recorded_again} answered decisions lost by the crash and recorded again, "
            f"all delivered {time.monotonic() - killed:.1f}s after the kill"
        )
        assert len(per_recipient) == len(per_message) == TOTAL  # none lost, one Message-ID per send
        assert sum(n - 1 for n in per_message.values()) == 0
    finally:
        stack.stop_all()
        stop()
