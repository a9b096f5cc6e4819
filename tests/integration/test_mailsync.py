"""IMAP sync of pool mailboxes (issue 14), against a real Dovecot server the tests start: a mailbox's
IMAP account as the identities dialect sets and shows it; replies, bounces and out-of-office answers
appended to the mailbox at its provider arriving as if received over SMTP; exactly-once intake across a
SIGKILL and across sync workers; a refused login shown without stopping sends."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from standardwebhooks import Webhook

from devstack.infra import free_port
from devstack.local import Stack, wait_ready
from schemas import ids
from tests.conftest import Api, Receiver, Relay, eventually
from tests.dovecot import MISSING, Dovecot, binary
from tests.integration.test_inbound import reply_to, send_intro, suppressions
from tests.integration.test_intake import attached, mime
from tests.unit.test_reports import FAILED, dsn

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
PASSWORD = "imap-pass-1"


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    if (
        not binary()
    ):  # only where Dovecot cannot be installed (`make test` installs it); MISSING says what to do
        pytest.skip(MISSING)
    server = Dovecot().start()
    try:
        yield server
    finally:
        server.stop()


async def synced_identity(
    api: Api, relay: Relay, dovecot: Dovecot, *, mailboxes: int = 1, password: str = PASSWORD
) -> tuple[str, list[dict]]:
    """An identity whose pool mailboxes are users of the Dovecot server, each synced once (its
    checkpoint set: mail appended from now on is read)."""
    handle = f"agent-{uuid.uuid4().hex[:8]}@example.test"
    assert (await api.call("POST", "/v1/identities", {"handle": handle}))[0] == 201
    created = []
    for _ in range(mailboxes):
        email = f"pool-{uuid.uuid4().hex[:8]}@tryacme.test"
        dovecot.add_user(email, PASSWORD)
        status, mailbox, _ = await api.call(
            "POST", f"/v1/identities/{handle}/mailboxes",
            {"email": email, "smtp": relay.smtp_settings(), "imap": dovecot.settings(email, password)},
        )  # fmt: skip
        assert status == 201, mailbox
        created.append(mailbox)
    if password == PASSWORD:
        for mailbox in created:
            await synced(api, handle, mailbox["id"])
    return handle, created


async def synced(api: Api, handle: str, mailbox_id: str, timeout: float = 30) -> dict:
    async def probe() -> dict | None:
        _, mailbox, _ = await api.call("GET", f"/v1/identities/{handle}/mailboxes/{mailbox_id}")
        sync = mailbox["sync"]
        return mailbox if sync["state"] == "idle" and sync["lastSyncedAt"] else None

    return await eventually(probe, timeout=timeout, interval=0.2)


def letter(sender: str, to: str, subject: str, text: str) -> bytes:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = sender, to, subject
    m["Message-ID"] = make_msgid(domain="example.test")
    m.set_content(text)
    return bytes(m)


async def inbound_count(db, mailbox_ids: list[str]) -> dict[str, int]:
    """Received messages per Message-ID in these mailboxes (exactly once: every count is 1)."""
    rows = await db.fetch(
        """SELECT rfc_message_id, count(*) AS n FROM messages
            WHERE mailbox_id = ANY($1::uuid[]) AND direction = 'inbound' GROUP BY rfc_message_id""",
        [ids.parse("mailbox", m) for m in mailbox_ids],
    )
    return {r["rfc_message_id"]: r["n"] for r in rows}


IMAP = {
    "host": "imap.example.test",
    "port": 993,
    "tls": "tls",
    "username": "pool1@tryacme.test",
    "password": "s3cret",
}


async def test_a_mailbox_carries_an_imap_account_whose_password_is_sealed_and_never_shown(
    api: Api, relay: Relay, db
) -> None:
    handle = f"agent-{uuid.uuid4().hex[:8]}@example.test"
    assert (await api.call("POST", "/v1/identities", {"handle": handle}))[0] == 201
    email = f"pool-{uuid.uuid4().hex[:6]}@tryacme.test"
    status, mailbox, _ = await api.call(
        "POST", f"/v1/identities/{handle}/mailboxes", {"email": email, "smtp": relay.smtp_settings(), "imap": IMAP}
    )  # fmt: skip
    assert status == 201, mailbox
    assert mailbox["imap"] == {k: v for k, v in IMAP.items() if k != "password"}
    assert mailbox["sync"] == {"state": "idle", "error": None, "lastSyncedAt": None}
    url = f"/v1/identities/{handle}/mailboxes/{mailbox['id']}"
    assert (await api.call("GET", url))[1] == mailbox
    stored = await db.fetchval("SELECT imap_password FROM mailboxes WHERE email = $1", email)
    assert stored and "s3cret" not in stored

    status, changed, _ = await api.call(
        "PATCH", url, {"imap": {**IMAP, "host": "mail.tryacme.test", "port": 143, "tls": "starttls"}}
    )
    assert (
        status == 200
        and changed["imap"]["host"] == "mail.tryacme.test"
        and changed["imap"]["tls"] == "starttls"
    )
    status, body, _ = await api.call("PATCH", url, {"imap": {"host": "x.test", "username": "u"}})
    assert status == 400 and "imap.password" in body["error"]["message"], body
    status, removed, _ = await api.call("PATCH", url, {"imap": None})
    assert status == 200 and removed["imap"] is None and removed["sync"] is None
    status, plain, _ = await api.call("PATCH", url, {"hourlyLimit": 10})
    assert status == 200 and plain["imap"] is None
    assert await db.fetchval("SELECT imap_password FROM mailboxes WHERE email = $1", email) is None


async def test_a_reply_appended_at_the_provider_joins_its_conversation_and_the_next_reply_threads_onto_it(
    api: Api, relay: Relay, receiver: Receiver, dovecot: Dovecot
) -> None:
    status, hook, _ = await api.call(
        "POST", "/v1/webhooks", {"url": receiver.url("/imap-received"), "events": ["message.received"]}
    )
    assert status == 201, hook
    handle, [mailbox] = await synced_identity(api, relay, dovecot)
    email = mailbox["email"]
    message, original = await send_intro(api, relay, handle)

    # a copy of our own send in the mailbox (the provider files one, or we were Bcc'd) is not received mail
    answer = reply_to(original.message, "morgan@example.test", email, "Tell me more.")
    await dovecot.append(email, PASSWORD, [original.data, bytes(answer)])

    async def conversation_of(n: int) -> dict | None:
        _, conv, _ = await api.call("GET", f"/v1/conversations/{message['convId']}")
        return conv if len(conv["messages"]) >= n else None

    conv = await eventually(lambda: conversation_of(2), timeout=20)
    received = conv["messages"][1]
    assert (received["direction"], received["status"], received["id"]) == (
        "inbound", "received", answer["Message-ID"]
    )  # fmt: skip
    assert received["account"]["email"] == email and received["from"] == "morgan@example.test"
    assert received["replyText"] == "Tell me more." and received["autoReply"] is False

    [request] = await receiver.wait_for("/imap-received", 1)
    payload = Webhook(hook["secret"]).verify(request.body, request.headers)
    assert payload["type"] == "message.received" and payload["data"]["convId"] == message["convId"], payload

    status, body, _ = await api.call(
        "POST", f"/v1/identities/{handle}/send", {"convId": message["convId"], "text": "Here is more."}
    )
    assert status == 202, body
    [_, ours] = await relay.wait_for(2)
    assert ours.message["From"] == email and ours.message["In-Reply-To"] == answer["Message-ID"]
    assert ours.message["Subject"] == "Re: Intro"
    conv = await eventually(lambda: conversation_of(3), timeout=10)
    assert [m["direction"] for m in conv["messages"]] == [
        "outbound",
        "inbound",
        "outbound",
    ]  # the copy: not received


async def test_a_backlog_of_replies_each_answering_the_one_before_stays_one_conversation(
    api: Api, relay: Relay, dovecot: Dovecot
) -> None:
    """A batch is kept several messages at once, but each reaches the log after the one before it: a
    reply that names only the message it answers is threaded after that message is known."""
    handle, [mailbox] = await synced_identity(api, relay, dovecot)
    email = mailbox["email"]
    message, original = await send_intro(api, relay, handle)
    chain, before = [], original.message
    for i in range(30):  # each In-Reply-To and References only the one before
        before = reply_to(before, "morgan@example.test", email, f"And another thing ({i}).")
        chain.append(before)
    await dovecot.append(email, PASSWORD, [bytes(m) for m in chain])

    async def conversation() -> dict | None:
        _, conv, _ = await api.call("GET", f"/v1/conversations/{message['convId']}")
        return conv if len(conv["messages"]) == 1 + len(chain) else None

    conv = await eventually(conversation, timeout=30, interval=0.3)
    assert {m["id"] for m in conv["messages"][1:]} == {m["Message-ID"] for m in chain}


async def test_a_bounce_in_the_mailbox_bounces_and_suppresses_and_an_out_of_office_in_spam_does_not(
    api: Api, relay: Relay, dovecot: Dovecot
) -> None:
    handle, [mailbox] = await synced_identity(api, relay, dovecot)
    email = mailbox["email"]
    gone, lead = f"gone-{uuid.uuid4().hex[:6]}@example.test", f"lead-{uuid.uuid4().hex[:6]}@example.test"
    sent = {}
    for to in (gone, lead):
        _, body, _ = await api.call(
            "POST", f"/v1/identities/{handle}/send", {"to": to, "subject": "Intro", "text": "Hello"}
        )
        sent[to] = body["messages"][0]
    originals = {r.rcpt_tos[0]: r.message for r in await relay.wait_for(2)}

    bounce = dsn(originals[gone]["Message-ID"], FAILED.replace("gone@example.test", gone))
    await dovecot.append(email, PASSWORD, [bounce])
    ooo = EmailMessage()
    ooo["From"], ooo["To"], ooo["Subject"] = lead, email, "Out of office: Intro"
    ooo["Auto-Submitted"], ooo["In-Reply-To"] = "auto-replied", originals[lead]["Message-ID"]
    ooo["Message-ID"] = make_msgid(domain="example.test")
    ooo.set_content("I am away until Monday.")
    await dovecot.append(email, PASSWORD, [bytes(ooo)], folder="Junk")  # the provider filed it as spam

    async def conversation(to: str, n: int) -> dict | None:
        _, conv, _ = await api.call("GET", f"/v1/conversations/{sent[to]['convId']}")
        return conv if len(conv["messages"]) == n else None

    async def bounced() -> dict | None:
        conv = await conversation(gone, 1)
        return conv if conv and conv["messages"][0]["status"] == "bounced" else None

    await eventually(bounced, timeout=20)
    entries = await eventually(lambda: suppressions(api), timeout=10)
    assert entries[gone]["reason"] == "hard_bounce" and lead not in entries

    conv = await eventually(lambda: conversation(lead, 2), timeout=20)
    assert [m["status"] for m in conv["messages"]] == ["sent", "received"]
    assert conv["messages"][1]["autoReply"] is True
    assert lead not in await suppressions(api)


async def test_a_refused_login_shows_as_the_mailboxs_sync_error_and_sending_through_it_still_works(
    api: Api, relay: Relay, dovecot: Dovecot
) -> None:
    handle, [mailbox] = await synced_identity(api, relay, dovecot, password="not-the-password")
    url = f"/v1/identities/{handle}/mailboxes/{mailbox['id']}"

    async def failed() -> dict | None:
        _, m, _ = await api.call("GET", url)
        return m if m["sync"]["state"] == "error" else None

    shown = await eventually(failed, timeout=20, interval=0.2)
    assert "login refused" in shown["sync"]["error"] and "AUTHENTICATIONFAILED" in shown["sync"]["error"], (
        shown
    )
    assert shown["sync"]["lastSyncedAt"] is None

    status, body, _ = await api.call(
        "POST", f"/v1/identities/{handle}/send", {"to": "morgan@example.test", "subject": "Still", "text": "Up"}
    )  # fmt: skip
    assert status == 202 and body["messages"][0]["status"] == "accepted", body
    [out] = await relay.wait_for(1)
    assert out.message["From"] == mailbox["email"]

    # the right password: the sync recovers at once, the error gone
    status, _, _ = await api.call("PATCH", url, {"imap": dovecot.settings(mailbox["email"], PASSWORD)})
    assert status == 200
    recovered = await synced(api, handle, mailbox["id"])
    assert recovered["sync"]["error"] is None


async def test_sigkill_of_the_sync_service_while_200_messages_arrive_ingests_each_exactly_once(
    api: Api, relay: Relay, dovecot: Dovecot, stack: Stack, db
) -> None:
    _, [mailbox] = await synced_identity(api, relay, dovecot)
    email = mailbox["email"]
    letters = [letter(f"lead{i}@example.test", email, f"Lead {i}", f"Hello {i}") for i in range(200)]
    appending = asyncio.create_task(dovecot.append(email, PASSWORD, letters))
    await eventually(lambda: inbound_count(db, [mailbox["id"]]), timeout=20)  # the first are in
    stack.kill("mailsync")
    await appending
    await restart(stack)

    def all_counted():
        return inbound_count(db, [mailbox["id"]])

    async def all_in() -> dict | None:
        counts = await all_counted()
        return counts if len(counts) == 200 else None

    counts = await eventually(all_in, timeout=60, interval=0.3)
    assert set(counts.values()) == {1}
    # A marker appended after them is read after them (in UID order): once it is in, nothing of the 200
    # is still to come, twice or at all.
    await dovecot.append(email, PASSWORD, [letter("marker@example.test", email, "Marker", "m")])
    counts = await eventually(lambda: _with_count(all_counted(), 201), timeout=30, interval=0.2)
    assert set(counts.values()) == {1}


async def test_two_sync_workers_split_the_mailboxes_and_one_takes_over_when_the_other_dies(
    api: Api, relay: Relay, dovecot: Dovecot, stack: Stack, service_env: dict, db
) -> None:
    port = free_port()
    stack.start(
        "mailsync-2", ["-m", "services.mailsync"],
        env={"SENDSTREAM_METRICS_PORT": str(port), "SENDSTREAM_MAILSYNC_WORKER_ID": "worker-2"},
    )  # fmt: skip
    try:
        await asyncio.to_thread(wait_ready, f"http://127.0.0.1:{port}/readyz", 60, stack)
        handle, mailboxes = await synced_identity(api, relay, dovecot, mailboxes=8)
        mailbox_ids = [m["id"] for m in mailboxes]

        async def workers() -> dict[uuid.UUID, str]:
            rows = await db.fetch(
                "SELECT id, sync_worker FROM mailboxes WHERE id = ANY($1::uuid[])",
                [ids.parse("mailbox", m) for m in mailbox_ids],
            )
            return {r["id"]: r["sync_worker"] for r in rows}

        split = await workers()
        assert "worker-2" in split.values() and len(set(split.values())) == 2, split  # both hold some

        async def deliver_round(n: int) -> None:
            for m in mailboxes:
                await dovecot.append(
                    m["email"], PASSWORD, [letter("lead@example.test", m["email"], f"Round {n}", "Hi")]
                )

        await deliver_round(1)
        await eventually(lambda: _all_counted(db, mailbox_ids, 8), timeout=20, interval=0.2)

        stack.kill("mailsync")  # the first worker dies: its mailboxes move to worker-2
        await deliver_round(2)

        async def moved() -> dict | None:
            now = await workers()
            return now if set(now.values()) == {"worker-2"} else None

        await eventually(moved, timeout=30, interval=0.2)
        counts = await eventually(lambda: _all_counted(db, mailbox_ids, 16), timeout=30, interval=0.2)
        assert set(counts.values()) == {1}
        for m in mailboxes:
            await synced(api, handle, m["id"])
    finally:
        stack.stop("mailsync-2")  # first: the stack's worker then joins an empty group, the quickest join
        if "mailsync" not in stack.procs:
            await restart(stack)


async def restart(stack: Stack) -> None:
    """The stack's sync worker again, as it was started (its metrics port), ready."""
    stack.start("mailsync")
    await asyncio.to_thread(
        wait_ready, f"http://127.0.0.1:{stack.metrics_ports['mailsync']}/readyz", 60, stack
    )


async def _all_counted(db, ids: list[str], n: int) -> dict | None:
    counts = await inbound_count(db, ids)
    return counts if sum(counts.values()) >= n else None


async def test_a_message_the_intake_refuses_is_passed_over_and_the_folder_reads_on(
    api: Api, relay: Relay, dovecot: Dovecot, db
) -> None:
    """A 3,000-deep multipart in the mailbox (refused for good at the SMTP door) is passed over: the
    messages after it are kept, one with a NUL in a file name among them, and the checkpoint moves past
    all of them (it stayed before it for ever, the batch read again and again)."""
    handle, [mailbox] = await synced_identity(api, relay, dovecot)
    email = mailbox["email"]
    head = f"From: ana@example.test\r\nTo: {email}\r\nSubject: deep\r\nMIME-Version: 1.0\r\n"
    opening = "".join(f"Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n" for i in range(3000))
    closing = "".join(f"\r\n--b{i}--" for i in reversed(range(3000)))
    deep = (head + opening + "Content-Type: text/plain\r\n\r\ndeep inside" + closing + "\r\n").encode()
    named = mime(email, "named", attached("filename*=utf-8''a%00b.txt", "data"))
    after = letter("ana@example.test", email, "after", "still read")
    await dovecot.append(email, PASSWORD, [deep, named, after])

    counted = await eventually(lambda: _with_count(inbound_count(db, [mailbox["id"]]), 2), timeout=30)
    assert set(counted.values()) == {1}
    mailbox_id = ids.parse("mailbox", mailbox["id"])

    async def past_all() -> bool:
        last = await db.fetchval(
            "SELECT last_uid FROM mailsync_checkpoints WHERE mailbox_id = $1 AND folder = 'INBOX'", mailbox_id
        )
        return last is not None and last >= 3

    await eventually(past_all, timeout=20)
    synced_now = await synced(api, handle, mailbox["id"])
    assert synced_now["sync"]["error"] is None
    files = await db.fetchval(
        "SELECT attachments FROM messages WHERE mailbox_id = $1 AND subject = 'named'", mailbox_id
    )
    assert "a\ufffdb.txt" in str(files)


async def _with_count(found, n: int) -> dict | None:
    counts = await found
    return counts if len(counts) >= n else None
