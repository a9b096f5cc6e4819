"""CPU per message of the consumers' own work at a fixed batch size, against an embedded PostgreSQL (fsync
on), without the broker: decide (decide_batch and its publisher's durable write, publishing stubbed),
the views (project), the archive (Archive.write), dispatch (a batch's reads and its outcome records)
and the webhooks' fan-out (no endpoint). Each figure is this process's CPU and PostgreSQL's (all its
processes, from /proc) per message. Independent of fetch timing and batch formation, so two versions
compare more steadily than in `make bench` on a busy machine (run each a few times, alternating).

Usage: `python -m bench.consumers [messages] [batch]` (defaults 2000 and 5: about one batch per 50 ms
at 100 req/s).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

import projections.app as views
import services.decide.app as decide
import services.dispatch.app as dispatch
from devstack.infra import start_postgres
from projections.archive import Archive
from schemas.envelope import Envelope
from schemas.events import (
    Content,
    MessageSent,
    MessageSentPayload,
    MessageSummary,
    RequestedMessage,
    SendRequested,
    SendRequestedPayload,
    SmtpReply,
)
from schemas.ids import new_id
from services.common import db
from services.common.broker import Logged
from services.common.secrets import Secrets
from services.common.settings import DecideSettings
from services.dispatch.recorder import OutcomeRecorder
from services.webhooks.app import fan_out

TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> float:
    """CPU seconds used so far by `root` and every process under it."""
    children: dict[int, list[int]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        children.setdefault(parent, []).append(int(pid))
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
        except OSError:
            pass
        todo.extend(children.get(pid, []))
    return total


class Meter:
    """This process's CPU and PostgreSQL's over a stretch."""

    def __init__(self, postmaster: int):
        self.postmaster = postmaster

    def __enter__(self) -> Meter:
        self.mine, self.pg = time.process_time(), tree_cpu(self.postmaster)
        return self

    def __exit__(self, *exc: object) -> None:
        self.mine = time.process_time() - self.mine
        self.pg = tree_cpu(self.postmaster) - self.pg


def postmaster_of(url: str) -> int:
    port = url.rsplit(":", 1)[1].split("/")[0].encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"postgres") and b"-p" in argv and argv[argv.index(b"-p") + 1] == port:
            return int(pid)
    raise RuntimeError("the embedded PostgreSQL was not found")


async def no_publish(*args: object, **kwargs: object) -> None:
    pass


async def run(n: int, b: int) -> dict[str, tuple[float, float]]:
    url, stop = start_postgres(Path(tempfile.mkdtemp(prefix="bench-consumers-")) / "pg", durable=True)
    try:
        pool = await asyncpg.create_pool(url, min_size=2, max_size=4, init=db.init_connection, reset=db._keep)
        await db.migrate(pool)
        org, idn, acc = new_id(), new_id(), new_id()
        await pool.execute("INSERT INTO organizations (id, name) VALUES ($1, 'o')", org)
        await pool.execute(
            """INSERT INTO identities (id, org_id, handle, daily_cap, timezone)
               VALUES ($1, $2, $3, 1000000, 'UTC')""",
            idn, org, f"{idn.hex}@example.test",
        )  # fmt: skip
        await pool.execute(
            """INSERT INTO mailboxes (id, org_id, identity_id, email, smtp_host, smtp_port, smtp_tls,
                                      hourly_limit, daily_limit)
               VALUES ($1, $2, $3, 's@tryacme.test', '127.0.0.1', 25, 'none', 10000000, 10000000)""",
            acc, org, idn,
        )  # fmt: skip

        def request(i: int) -> SendRequested:
            to = f"r{i}-{uuid.uuid4().hex[:6]}@example.test"
            return SendRequested(org_id=org, identity_id=idn, payload=SendRequestedPayload(
                handle=f"{idn.hex}@example.test", content=Content(subject="s", text="t"),
                messages=[RequestedMessage(message_id=new_id(), conv_id=new_id(), to=to)]))  # fmt: skip

        decide.publish_events = no_publish  # the broker is not measured here
        publisher = decide.DurablePublisher(None, DecideSettings(database_url=url), pool)
        postmaster, meters = postmaster_of(url), {}
        for _ in range(3):  # warm-up: the statements prepared
            await publisher._publish(
                [await decide.decide_batch(pool, [request(i) for i in range(b)], datetime.now(UTC))]
            )
        requests: list[Envelope] = []
        decisions: list[Envelope] = []
        with Meter(postmaster) as meters["decide (decide_batch + publisher)"]:
            for _ in range(n // b):
                batch = [request(i) for i in range(b)]
                decided = await decide.decide_batch(pool, batch, datetime.now(UTC))
                await publisher._publish([decided])
                requests += batch
                decisions += decided.decisions
        sent = [
            MessageSent(**d.caused(), payload=MessageSentPayload(
                message_id=d.payload.message_id, mailbox_id=d.payload.mailbox_id, relay="r",
                rfc_message_id=d.payload.rfc_message_id, reply=SmtpReply(code=250, message="ok"),
                summary=MessageSummary(conv_id=d.payload.conv_id, from_addr=d.payload.from_addr,
                                       to=d.payload.to, subject="s", mailbox_email=d.payload.mailbox_email)))
            for d in decisions
        ]  # fmt: skip
        stream = requests + decisions + sent  # each message's three events, a topic after the other
        with Meter(postmaster) as meters["views project"]:
            for k in range(0, len(stream), b):
                await views.project(pool, stream[k : k + b])
        archive = Archive(pool)
        with Meter(postmaster) as meters["archive write"]:
            for k in range(0, len(stream), b):
                await archive.write([Logged(e, "t", 0, k + j) for j, e in enumerate(stream[k : k + b])])
        secrets, recorder = Secrets([]), OutcomeRecorder(pool, "dispatch")
        with Meter(postmaster) as meters["dispatch batch reads + outcome record"]:
            for k in range(0, len(decisions), b):
                todo = decisions[k : k + b]
                await dispatch.batch_state(pool, todo, secrets)
                await recorder._write([(d.event_id, [s]) for d, s in zip(todo, sent[k : k + b], strict=True)])
        with Meter(postmaster) as meters["webhooks fan_out (no endpoint)"]:
            for k in range(0, len(stream), b):
                await fan_out(pool, stream[k : k + b])
        await pool.close()
        return {name: (m.mine / len(decisions), m.pg / len(decisions)) for name, m in meters.items()}
    finally:
        stop()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    b = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    print(f"{n} sends, batches of {b}, CPU per message (ms)")
    for name, (mine, pg) in asyncio.run(run(n, b)).items():
        print(f"  {name:<40} consumer {mine * 1000:6.3f}   postgresql {pg * 1000:6.3f}")


if __name__ == "__main__":
    main()
