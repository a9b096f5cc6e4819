"""The black-box benchmark (`python -m bench.blackbox`, issue 24) still runs: a `--quick` smoke run against
the session's stack, over HTTP and SMTP only, reaches its summary. It asserts that the bench works,
never a speed: the figures of a smoke run on a shared test stack mean nothing (speed targets live in
bench/)."""

from __future__ import annotations

import asyncio
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def test_the_black_box_bench_runs_against_a_stack_and_prints_every_figure(stack, service_env) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.blackbox", "--quick",
        "--url", f"http://127.0.0.1:{service_env['SENDSTREAM_HTTP_PORT']}",
        "--key", service_env["SENDSTREAM_BOOTSTRAP_API_KEY"],
        "--domain", "example.test",  # one of the session's shared domains
        "--rate", "50", "--clients", "8", "--sends", "60", "--raw", "100", "--warmup", "10",
        "--seconds", "2", "--low-seconds", "1", "--grace", "10",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    for part in ("[raw SMTP]", "[throughput]", "[latency] 50 req/s", "[overload]", "summary:"):
        assert part in text, text[-3000:]
    # Every send of the closed loop was answered 202 and reached the bench's own sink.
    assert "delivered 60 in" in text, text[-3000:]
