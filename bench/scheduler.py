"""Scheduler fire precision (SPEC 3.5): 10,000 sends scheduled to fire within one minute, against the raw
SMTP rate measured in the same run.

The whole stack runs (as `make bench` starts it). One identity schedules `--timers` messages through
the API, 100 recipients a request, their `sendAt` spread evenly over one minute starting `--lead`
seconds ahead. Each message's lateness is measured twice, from the database once all are sent: when
decide decided its firing (its SendAccepted, in the audit archive) and when the relay answered 250
(the messages view's `sent_at`), each minus its `sendAt`. A minute of 10,000 asks for 167 sends a
second, about what the pipeline sends end to end (bench/send_pipeline.py): lateness grows through the
minute when the pipeline cannot keep up, and that is what this shows.
Usage: `python -m bench.scheduler [--timers 10000 --lead 40]` (also run by `make bench`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import uvloop

from bench.send_pipeline import ms, raw_smtp_rate, running_pipeline, setup_identity, tenant_client
from services.common.settings import DispatchSettings

PER_REQUEST = 100  # recipients of one request: each its own message, all due at one instant
WINDOW_S = 60.0

LATENESS = """
SELECT extract(epoch FROM a.decided - s.send_at) AS decided, extract(epoch FROM m.sent_at - s.send_at) AS sent
  FROM scheduled_sends s
  JOIN messages m ON m.id = s.message_id
  JOIN LATERAL (SELECT min(occurred_at) AS decided FROM event_archive e
                 WHERE e.message_ids @> ARRAY[s.message_id] AND e.type = 'SendAccepted') a ON true
 WHERE s.identity_id = $1
"""


async def main(args: argparse.Namespace) -> None:
    async with running_pipeline("scheduler", durable=True) as pipeline:
        pool = await asyncpg.create_pool(pipeline.infra.env["DATABASE_URL"], min_size=1, max_size=2)
        try:
            lanes = DispatchSettings().smtp_pool_size
            smtp_n = await raw_smtp_rate(pipeline.sink_port, lanes)
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
                client = await tenant_client(session, pipeline, "scheduler")
                handle, _ = await setup_identity(client, pipeline.sink_port)
                identity = await pool.fetchval("SELECT id FROM identities WHERE handle = $1", handle)
                start = datetime.now(UTC) + timedelta(seconds=args.lead)
                requests = args.timers // PER_REQUEST
                gate = asyncio.Semaphore(8)

                async def schedule(i: int) -> None:
                    at = start + timedelta(seconds=WINDOW_S * i / requests)
                    body = {
                        "to": [f"t{i}-{j}@example.test" for j in range(PER_REQUEST)], "subject": "Later",
                        "text": "Hello later", "sendAt": at.isoformat(),
                    }  # fmt: skip
                    async with gate:
                        status, answer, _ = await client.post(f"/v1/identities/{handle}/send", body)
                    assert status == 202 and answer["scheduled"] == PER_REQUEST, answer

                began = time.perf_counter()
                await asyncio.gather(*(schedule(i) for i in range(requests)))
                scheduling_s = time.perf_counter() - began
                assert datetime.now(UTC) < start, f"scheduling took {scheduling_s:.0f}s: raise --lead"
                total = requests * PER_REQUEST
                deadline = time.monotonic() + args.lead + WINDOW_S + 600
                while await pool.fetchval(
                    "SELECT count(*) FROM messages WHERE identity_id = $1 AND sent_at IS NOT NULL", identity
                ) < total:
                    assert time.monotonic() < deadline, "not every scheduled send was sent in time"
                    await asyncio.sleep(1)
                await asyncio.sleep(3)  # the audit archive
                rows = await pool.fetch(LATENESS, identity)
        finally:
            await pool.close()

    decided = sorted(float(r["decided"]) for r in rows)
    sent = sorted(float(r["sent"]) for r in rows)
    span = WINDOW_S + max(sent[-1], 0)  # from the first due to the last sent, near enough
    print(f"\nscheduler fire precision on {os.cpu_count()} cores: {total} sends due within {WINDOW_S:.0f} s")
    print(f"  scheduled through the API in                 {scheduling_s:9.1f} s ({total / scheduling_s:.0f} msg/s)")
    print(f"  asked of the pipeline                         {total / WINDOW_S:9.0f} msg/s")
    print(f"  raw SMTP, {lanes} connections (this run)            {smtp_n:9.0f} msg/s")
    print(f"  measured                                      {len(rows):9d} of {total}")
    print(f"  lateness, firing decided                      {ms(decided)}   max {decided[-1] * 1000:.0f} ms")
    print(f"  lateness, relay 250                           {ms(sent)}   max {sent[-1] * 1000:.0f} ms")
    print(f"  early (before sendAt)                         {sum(d < 0 for d in decided):9d}")
    print(f"  sent over the minute and its drain            {total / span:9.0f} msg/s   = {total / span / smtp_n:.2f} x raw SMTP")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timers", type=int, default=10_000)
    parser.add_argument("--lead", type=float, default=40.0, help="seconds from now to the minute's start")
    uvloop.run(main(parser.parse_args()))
