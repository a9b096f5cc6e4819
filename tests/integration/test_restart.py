"""An accepted send survives a restart of the local stack, whose broker keeps its log in memory.

Each test runs its own broker (the embedded Tansu, memory storage, as `make run` starts it) and its own
durable PostgreSQL, sends 200 messages that are answered 202 while dispatch is stopped (so all of them
are in flight), loses the log, and checks that every one of them reaches the relay.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from devstack.infra import TANSU_TUNING, free_port, start_postgres, start_tansu
from devstack.local import Stack, wait_ready
from schemas import ids
from tests.conftest import REPORT, Api, Relay, eventually, new_org
from tests.integration.test_archive import sendstream
from tests.integration.test_crash import identity_for

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

TOTAL = 200


@dataclass
class Local:
    """A stack of its own: broker, PostgreSQL, services."""

    env: dict[str, str]
    stack: Stack
    kafka_port: int
    data: Path
    stop_broker: Callable[[], None]

    def start_broker(self) -> None:
        _, self.stop_broker = start_tansu(self.kafka_port, self.data / "tansu.log")

    def start_services(self) -> None:
        self.stack.start_services(90)
        wait_ready(f"http://127.0.0.1:{self.env['SENDSTREAM_HTTP_PORT']}/readyz", 90, self.stack)


@asynccontextmanager
async def local_stack(
    service_env: dict, tmp_path_factory: pytest.TempPathFactory, **extra: str
) -> AsyncIterator[Local]:
    data = tmp_path_factory.mktemp("restart")
    data.chmod(0o755)  # embedded PostgreSQL runs unprivileged when we are root
    url, stop_pg = start_postgres(data / "pg", free_port(), durable=True, log_path=data / "postgres.log")
    kafka_port = free_port()
    bootstrap, stop_broker = start_tansu(kafka_port, data / "tansu.log")
    env = {
        **service_env,
        **TANSU_TUNING,
        "DATABASE_URL": url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SENDSTREAM_KAFKA_TOPIC_PREFIX": f"restart{uuid.uuid4().hex[:6]}",
        "SENDSTREAM_HTTP_PORT": str(free_port()),
        "SENDSTREAM_INBOUND_PORT": str(free_port()),
        "SENDSTREAM_DECISION_TIMEOUT_S": "2",
        **extra,
    }
    local = Local(
        env, Stack(env, log_dir=tmp_path_factory.mktemp("restart-logs")), kafka_port, data, stop_broker
    )
    try:
        local.start_services()
        yield local
    finally:
        local.stack.stop_all()
        local.stop_broker()
        stop_pg()


async def send_many(api: Api, handle: str, first: int, count: int) -> list[dict]:
    """`count` sends (recipients lead-<first>... ), 16 at a time; each must be answered 202."""
    answers: list[dict] = []
    todo = list(range(first, first + count))

    async def worker() -> None:
        while todo:
            i = todo.pop(0)
            status, body, _ = await api.call(
                "POST",
                f"/v1/identities/{handle}/send",
                {"to": f"lead-{i}@example.test", "subject": f"Step {i}", "text": "Hi"},
                headers={"Idempotency-Key": f"restart-{i}"},
            )
            assert status == 202, body
            answers.append(body["messages"][0])

    await asyncio.gather(*(worker() for _ in range(16)))
    return answers


async def trail_has(api: Api, message_id: str, types: list[str]) -> bool:
    """The message's audit trail is exactly `types`, in order."""
    status, body, _ = await api.call("GET", f"/v1/messages/{message_id}/events")
    return status == 200 and [e["type"] for e in body["data"]] == types


async def archived(local: Local, count: int) -> bool:
    conn = await asyncpg.connect(local.env["DATABASE_URL"])
    try:
        return (
            await conn.fetchval(
                "SELECT count(*) FROM event_archive WHERE type IN ('SendRequested', 'SendAccepted')"
            )
            >= count
        )
    finally:
        await conn.close()


def redriven_at_once(local: Local) -> int:
    """How many messages the scheduler found in flight when it saw that the broker's log was new."""
    lines = (local.stack.log_dir / "scheduler.log").read_text().splitlines()
    return sum(json.loads(line).get("in_flight", 0) for line in lines if "re-driven now" in line)


async def delivered(relay: Relay, timeout: float) -> tuple[int, int]:
    """(distinct messages the relay got, duplicates), once all TOTAL arrived or `timeout` passed."""
    deadline = time.monotonic() + timeout
    while len({r.rcpt_tos[0] for r in relay.received}) < TOTAL and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    per_message = Counter(r.message["Message-ID"] for r in relay.received)
    return len({r.rcpt_tos[0] for r in relay.received}), sum(n - 1 for n in per_message.values())


async def test_whole_stack_stopped_and_started_delivers_every_accepted_send(
    service_env: dict, relay: Relay, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """200 sends answered 202 (150 decided, 50 answered `queued` while decide was down), nothing yet
    sent; every process stopped, the broker's log with them; all started again as `make run` does:
    all 200 are delivered."""
    async with local_stack(service_env, tmp_path_factory) as local:
        async with aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{local.env['SENDSTREAM_HTTP_PORT']}"
            api = await new_org(Api(session, base, local.env["SENDSTREAM_BOOTSTRAP_API_KEY"]))
            handle = await identity_for(api, relay)
            local.stack.stop("dispatch")
            answers = await send_many(api, handle, 0, 150)
            local.stack.stop("decide")
            answers += await send_many(api, handle, 150, 50)
        statuses = Counter(a["status"] for a in answers)
        assert statuses == {"accepted": 150, "queued": 50}, statuses
        assert relay.received == []

        local.stack.stop_all()
        local.stop_broker()
        restarted = time.monotonic()
        local.start_broker()
        local.start_services()
        count, duplicates = await delivered(relay, 90)
        in_flight = redriven_at_once(local)
    REPORT.append(
        f"whole stack stopped and started with {TOTAL} sends in flight ({in_flight} re-driven): "
        f"lost {TOTAL - count}, duplicates {duplicates}, all delivered {time.monotonic() - restarted:.1f}s "
        "after the restart began"
    )
    assert in_flight == TOTAL  # found by the scheduler at once, not each after its own wait
    assert count == TOTAL and duplicates == 0


async def test_broker_alone_killed_and_restarted_delivers_every_accepted_send(
    service_env: dict, relay: Relay, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """200 sends answered 202 and waiting for dispatch; the broker alone SIGKILLed and started again
    empty while every service runs on: the messages that made no progress are re-driven, all 200 arrive;
    the views rebuilt from the archive equal the live ones."""
    async with (
        local_stack(service_env, tmp_path_factory, SENDSTREAM_REDRIVE_AFTER_S="3") as local,
        aiohttp.ClientSession() as session,
    ):
        base = f"http://127.0.0.1:{local.env['SENDSTREAM_HTTP_PORT']}"
        api = await new_org(Api(session, base, local.env["SENDSTREAM_BOOTSTRAP_API_KEY"]))
        handle = await identity_for(api, relay)
        local.stack.stop("dispatch")
        answers = await send_many(api, handle, 0, TOTAL)
        assert Counter(a["status"] for a in answers) == {"accepted": TOTAL}
        first = ids.render("message", uuid.UUID(answers[0]["id"].strip("<>").split("@")[0]))
        await eventually(lambda: trail_has(api, first, ["SendRequested", "SendAccepted"]))
        await eventually(lambda: archived(local, 2 * TOTAL))  # every request and decision kept

        local.stop_broker()  # SIGTERM would let it finish; the log is gone either way
        killed = time.monotonic()
        local.start_broker()
        local.stack.start("dispatch")
        count, duplicates = await delivered(relay, 120)
        in_flight = redriven_at_once(local)
        # The message's history from before the restart is in the archive, not in the lost log; its
        # re-driven decision, read again from the new log, is not kept twice.
        await eventually(lambda: trail_has(api, first, ["SendRequested", "SendAccepted", "MessageSent"]))
        # and the views rebuilt from the archive are the ones the projections kept through it all
        code, out = await sendstream(local.env, "replay", "--wait", "30")
        assert code == 0 and "equal the live ones, row for row" in out, out
    REPORT.append(
        f"broker alone restarted with {TOTAL} sends in flight: lost {TOTAL - count}, duplicates {duplicates}, "
        f"all delivered {time.monotonic() - killed:.1f}s after the restart ({in_flight} re-driven at once)"
    )
    assert in_flight == TOTAL  # the scheduler saw the new log; none waited out its doubled re-drive wait
    assert count == TOTAL and duplicates == 0


async def test_postgresql_starts_again_at_once_after_its_server_was_killed_mid_write(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """`make run` after a kill -9 of the embedded PostgreSQL: its backends outlive the server for a moment
    and hold its shared memory, which a new server refuses to start beside; the start waits them out,
    and every committed row is there."""
    data = tmp_path_factory.mktemp("pg-again")
    data.chmod(0o755)  # embedded PostgreSQL runs unprivileged when we are root
    port = free_port()
    url, stop = start_postgres(data / "pg", port, durable=True, log_path=data / "postgres.log")
    try:
        for _ in range(3):
            pool = await asyncpg.create_pool(url, min_size=16, max_size=16)
            await pool.execute("CREATE TABLE IF NOT EXISTS rows (n int, filler text)")
            committed = [await pool.fetchval("SELECT count(*) FROM rows")]
            killed = asyncio.Event()

            writers = [asyncio.create_task(write_until(killed, pool, committed)) for _ in range(16)]
            await asyncio.sleep(0.5)
            conn = await asyncpg.connect(url)
            pid_file = Path(await conn.fetchval("SHOW data_directory")) / "postmaster.pid"
            await conn.close()
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)  # the server alone, mid-write
            killed.set()
            stop()
            url, stop = start_postgres(data / "pg", port, durable=True, log_path=data / "postgres.log")
            await asyncio.gather(*writers, return_exceptions=True)
            pool.terminate()
            conn = await asyncpg.connect(url)
            assert await conn.fetchval("SELECT count(*) FROM rows") >= committed[0]
            await conn.close()
    finally:
        stop()


async def write_until(killed: asyncio.Event, pool: asyncpg.Pool, committed: list[int]) -> None:
    """Insert rows until `killed`, counting those committed (a writer between inserts would otherwise go
    on into the new server)."""
    while not killed.is_set():
        await pool.execute("INSERT INTO rows SELECT g, repeat('x', 100) FROM generate_series(1, 200) g")
        committed[0] += 200
