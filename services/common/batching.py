"""Group commit: items that arrive together are written by one call, each caller awaiting its own result.

A caller hands in one item and awaits its result; items arriving within `max_delay` seconds of the
first (or until `max_items` are waiting) are flushed together by one `flush(items)` call, which returns
one result per item. A failed flush fails every caller in it. This is how outcomes that must be durable
before anything else happens (an SMTP reply, a webhook attempt) are recorded without a commit each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    def __init__(
        self,
        flush: Callable[[list[T]], Awaitable[Sequence[R]]],
        max_delay: float = 0.002,
        max_items: int = 200,
    ):
        self.flush, self.max_delay, self.max_items = flush, max_delay, max_items
        self.pending: list[tuple[T, asyncio.Future]] = []
        self.flusher: asyncio.Task | None = None

    async def submit(self, item: T) -> R:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((item, future))
        if len(self.pending) >= self.max_items:
            await self._flush()
        elif self.flusher is None:
            self.flusher = asyncio.create_task(self._flush_soon())
        return await future

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self.max_delay)
        self.flusher = None
        await self._flush()

    async def _flush(self) -> None:
        batch, self.pending = self.pending, []
        if not batch:
            return
        try:
            results = await self.flush([item for item, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
