"""Dispatch's SMTP connections (services/dispatch/smtp.py), against a real aiosmtpd server: reused across
batches, as many as were in use at once, and closed once idle for `idle_s`."""

from __future__ import annotations

import asyncio

from aiosmtpd.controller import Controller

from devstack.infra import free_port
from services.common.egress import Egress
from services.dispatch.smtp import Relay, SmtpPool


class Sink:
    async def handle_DATA(self, server, session, envelope) -> str:
        return "250 OK"


class Counting(Controller):
    """An SMTP server that counts the connections made to it."""

    def __init__(self, port: int):
        super().__init__(Sink(), hostname="127.0.0.1", port=port)
        self.connections = 0

    def factory(self):
        self.connections += 1
        return super().factory()


async def test_connections_are_reused_across_batches_and_closed_once_idle() -> None:
    server = Counting(free_port())
    server.start()
    server.connections = 0  # the controller's own check that the server answers
    try:
        pool = SmtpPool(timeout=5, transaction_timeout=10, hostname="test.local", size=2, idle_s=0.5,
                        egress=Egress(["127.0.0.0/8"]))  # fmt: skip
        relay = Relay("127.0.0.1", server.port, "none", None, None)

        async def batch(n: int) -> None:
            outcomes = await asyncio.gather(
                *(
                    pool.deliver(relay, "a@x.test", [f"b{i}@y.test"], b"Subject: s\r\n\r\nt\r\n")
                    for i in range(n)
                )
            )
            assert {o.kind for o in outcomes} == {"sent"}

        for _ in range(4):  # batches of eight, as dispatch takes them from a steady flow
            await batch(8)
        assert server.connections == 8  # (closing down to those still in use reopened most of them)
        assert len(pool.idle[relay]) == 8

        await asyncio.sleep(0.6)  # all idle past idle_s: none is reused, and none is kept
        await batch(1)
        assert server.connections == 9
        assert len(pool.idle[relay]) == 1
        await pool.close()
    finally:
        server.stop()
