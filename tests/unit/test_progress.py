"""A consumer or publisher that fails on and on says so: /readyz of its service and a metric."""

from __future__ import annotations

import aiohttp
from prometheus_client import REGISTRY

from devstack.infra import free_port
from services.common.progress import PROGRESS, Progress, stuck
from services.common.service import serve_operations


def test_failing_longer_than_the_limit_is_stuck_until_it_moves() -> None:
    p = Progress("lab publisher")
    try:
        p.failed(ValueError("the broker refuses the record"))
        p.failing_since -= 60
        [problem] = [s for s in stuck(30) if s.startswith("lab publisher")]
        assert "failing for 60 s" in problem and "ValueError: the broker refuses the record" in problem
        assert REGISTRY.get_sample_value("sendstream_stuck_seconds", {"component": "lab publisher"}) >= 60
        p.failed(OSError("again"))  # still failing: the time counts from the first failure
        assert p.stuck_for() >= 60
        p.moved()
        assert not [s for s in stuck(30) if s.startswith("lab publisher")]
        assert REGISTRY.get_sample_value("sendstream_stuck_seconds", {"component": "lab publisher"}) == 0
    finally:
        PROGRESS.remove(p)


async def test_readyz_names_what_is_stuck() -> None:
    p = Progress("lab consumer")
    port = free_port()
    runner = await serve_operations("127.0.0.1", port, broker=None, stuck_after_s=30)
    try:
        p.failed(ConnectionRefusedError("database down"))
        p.failing_since -= 45
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/readyz") as r:
            body = await r.json()
        assert r.status == 503 and body["status"] == "stuck"
        assert any(
            s.startswith("lab consumer: failing for 45 s (ConnectionRefusedError") for s in body["stuck"]
        )
    finally:
        PROGRESS.remove(p)
        await runner.cleanup()
