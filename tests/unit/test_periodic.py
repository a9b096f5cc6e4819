"""Periodic background work: runs at start and then again, a failed run does not end it, stop ends it."""

from __future__ import annotations

import asyncio

import pytest

from services.common.service import Periodic

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_runs_again_after_a_failure_and_stops_when_told() -> None:
    runs: list[int] = []

    async def job() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("the first run fails")

    periodic = Periodic("test", 0.01, job)
    await periodic.start()
    while len(runs) < 3:
        await asyncio.sleep(0.01)
    await periodic.stop()
    done = len(runs)
    await asyncio.sleep(0.05)
    assert done >= 3 and len(runs) == done and periodic.task.done()
