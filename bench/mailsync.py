"""Intake over IMAP: a mailbox with a backlog of messages at its provider (a real Dovecot server), read
by the mail sync service until every one is a `MessageReceived` on the log, against the raw limit
measured in the same run: the same backlog fetched by one IMAP client alone (aioimaplib, the batch
size the service uses), nothing stored.

Prints the intake rate (first to last `MessageReceived`), the time from setting the mailbox's IMAP
account to the first one, and the ratio to the raw fetch rate. Usage: `make bench` or
`python -m bench.mailsync --messages 1000`.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from email.message import EmailMessage
from email.utils import make_msgid

import aiohttp
import uvloop
from aiokafka import AIOKafkaConsumer

from bench.send_pipeline import running_pipeline, setup_identity, tenant_client
from schemas import topics
from schemas.events import MessageReceived, parse_event
from services.common.settings import MailsyncSettings
from services.mailsync.session import fetched_messages
from tests.dovecot import MISSING, Dovecot, binary

PASSWORD = "bench-pass"


def backlog(address: str, n: int) -> list[bytes]:
    """`n` plain replies of a few hundred bytes, as a sequence's answers are."""
    out = []
    for i in range(n):
        m = EmailMessage()
        m["From"], m["To"], m["Subject"] = f"lead{i}@example.test", address, f"Re: Intro {i}"
        m["Message-ID"] = make_msgid(domain="example.test")
        m.set_content(f"Thanks for reaching out. Could we talk on Thursday? ({i})\n\n" + "> Hello\n" * 20)
        out.append(bytes(m))
    return out


async def raw_fetch_rate(dovecot: Dovecot, user: str, n: int, batch: int) -> float:
    """Messages/s one IMAP client fetches the backlog at, `batch` UIDs per command, nothing stored."""
    imap = await dovecot.client(user, PASSWORD)
    try:
        await imap.select("INBOX")
        started, got = time.perf_counter(), 0
        for first in range(1, n + 1, batch):
            answer = await imap.uid("fetch", f"{first}:{min(first + batch - 1, n)}", "(UID BODY.PEEK[])")
            got += sum(1 for _ in fetched_messages(answer))
        assert got == n, got
        return n / (time.perf_counter() - started)
    finally:
        await imap.logout()


async def main(args: argparse.Namespace) -> None:
    if not binary():
        sys.exit(MISSING)
    dovecot = Dovecot().start()
    env = {"SENDSTREAM_MAILSYNC_LOOKBACK_S": "86400"}  # the backlog is older than the mailbox's sync
    try:
        async with running_pipeline("mailsync", durable=True, env=env) as pipeline:
            prefix = pipeline.stack.env["SENDSTREAM_KAFKA_TOPIC_PREFIX"]
            async with aiohttp.ClientSession() as session:
                client = await tenant_client(session, pipeline, "bench")
                handle, mailbox_id = await setup_identity(client, pipeline.sink_port)
                user = f"pool-{uuid.uuid4().hex[:6]}@tryacme.test"
                dovecot.add_user(user, PASSWORD)
                started = time.perf_counter()
                await dovecot.append(user, PASSWORD, backlog(user, args.messages))
                append_rate = args.messages / (time.perf_counter() - started)
                raw = await raw_fetch_rate(dovecot, user, args.messages, MailsyncSettings().mailsync_batch)

                consumer = AIOKafkaConsumer(
                    topics.MESSAGES.name(prefix), bootstrap_servers=pipeline.infra.env["KAFKA_BOOTSTRAP_SERVERS"],
                    auto_offset_reset="latest", enable_auto_commit=False,
                )  # fmt: skip
                await consumer.start()
                try:
                    await consumer.seek_to_end()
                    await consumer.getmany(timeout_ms=100)  # positions taken before the account is set
                    async with session.patch(
                        f"{pipeline.base}/v1/identities/{handle}/mailboxes/acc_{uuid.UUID(mailbox_id).hex}",
                        json={"imap": dovecot.settings(user, PASSWORD)},
                        headers={"Authorization": f"Bearer {client.key}"},
                    ) as r:
                        assert r.status == 200, await r.text()
                    set_at = time.perf_counter()
                    seen: set[uuid.UUID] = set()
                    first = last = None
                    deadline = time.monotonic() + args.timeout
                    while len(seen) < args.messages and time.monotonic() < deadline:
                        for records in (await consumer.getmany(timeout_ms=500, max_records=1000)).values():
                            for record in records:
                                event = parse_event(record.value)
                                if (
                                    isinstance(event, MessageReceived)
                                    and str(event.payload.mailbox_id) == mailbox_id
                                ):
                                    seen.add(event.payload.message_id)
                                    first = first or time.perf_counter()
                                    last = time.perf_counter()
                finally:
                    await consumer.stop()
        assert len(seen) == args.messages, f"only {len(seen)} of {args.messages} received in {args.timeout}s"
        rate = (len(seen) - 1) / (last - first)
        print(f"IMAP intake, one mailbox with a backlog of {args.messages} messages (Dovecot on loopback)")
        print(
            f"  raw IMAP fetch (one client, {MailsyncSettings().mailsync_batch} per FETCH)   {raw:8.0f} msg/s"
        )
        print(f"  (the backlog appended at                        {append_rate:8.0f} msg/s)")
        print(f"  account set -> first MessageReceived            {(first - set_at) * 1000:8.0f} ms")
        print(
            f"  intake, first -> last MessageReceived           {rate:8.0f} msg/s   {rate / raw:.2f} x raw fetch"
        )
        print(f"  all {args.messages} in                                   {last - set_at:8.1f} s")
    finally:
        dovecot.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=300)
    uvloop.run(main(parser.parse_args()))
