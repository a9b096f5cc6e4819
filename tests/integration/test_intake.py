"""Bytes from strangers, at the inbound door of the real stack: whatever a message's names, addresses
and structure, it is stored (readable, downloadable) or refused for good at DATA (5xx), never answered
451 forever, never lost after a 250, and never holds up another organization's sending (a canary send
of another organization reaches its relay within CANARY_WITHIN_S)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import aiohttp
import aiosmtplib
import pytest
from aiokafka import AIOKafkaProducer

from schemas import topics
from schemas.events import Content, MessageArrived
from tests.conftest import Api, Relay, deliver, eventually, new_org
from tests.integration.test_hostile import Canary
from tests.integration.test_mailboxes import listed, new_mailbox
from tests.integration.test_send import make_identity

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

CANARY_WITHIN_S = 2.0


async def new_canary(operator: Api, relay_factory: Callable[..., Relay]) -> Canary:
    api, relay = await new_org(operator), relay_factory()
    handle, _ = await make_identity(api, relay, daily_cap=100_000)  # a canary every 0.3 s for a minute
    canary = Canary(api, handle, relay)
    await canary.send()  # the first send of a new identity warms its caches; not measured
    canary.latencies.clear()
    return canary


def mime(address: str, subject: str, parts: str, *, sender: str = "ana@example.test") -> bytes:
    """A multipart/mixed message with these parts (MIME text after the first boundary, CRLF line ends)."""
    head = (
        f"From: {sender}\r\nTo: {address}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@client.example.test>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="XX"\r\n\r\n'
        "--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee attached.\r\n"
    )
    return (head + parts + "--XX--\r\n").encode()


def attached(name_param: str, data: str, content_type: str = "application/octet-stream") -> str:
    return f"--XX\r\nContent-Type: {content_type}\r\nContent-Disposition: attachment; {name_param}\r\n\r\n{data}\r\n"


async def detail(api: Api, address: str, subject: str) -> dict:
    """The message of this subject in the mailbox, read whole, once it is there."""

    async def found() -> dict | None:
        item = next((m for m in await listed(api, address, limit=100) if m["subject"] == subject), None)
        if item is None:
            return None
        status, message, _ = await api.call("GET", f"/mailboxes/{address}/messages/{item['id']}")
        return message if status == 200 else None

    return await eventually(found, timeout=30, interval=0.1)


async def download(api: Api, address: str, message_id: str, filename: str) -> tuple[int, dict, bytes]:
    """A file of a message through its signed link: (status, headers, bytes)."""
    from urllib.parse import quote  # noqa: PLC0415

    path = f"/mailboxes/{address}/messages/{message_id}/attachments/{quote(filename, safe='')}?redirect=false"
    status, link, _ = await api.call("GET", path)
    assert status == 200, (filename, link)
    async with aiohttp.ClientSession() as s, s.get(link["url"]) as r:
        return r.status, dict(r.headers), await r.read()


async def archived(db, message_id: str) -> set[str]:
    rows = await db.fetch(
        "SELECT type FROM event_archive WHERE message_ids @> ARRAY[$1::uuid]", uuid.UUID(message_id)
    )
    return {r["type"] for r in rows}


# --- finding 3: a NUL in a file name ---------------------------------------------------------------


async def test_a_nul_in_a_file_name_is_stored_whole_and_holds_no_one_up(
    api: Api, operator: Api, relay: Relay, relay_factory, inbound: int, db
) -> None:
    """Mail whose attachment is named `a%00b.txt` (RFC 2231) is answered 250 and stored: listed, its file
    downloadable, archived; four of them delay another organization's send by less than 2 s."""
    canary = await new_canary(operator, relay_factory)
    address = await new_mailbox(api, relay)
    subjects = [f"nul name {i} {uuid.uuid4().hex[:6]}" for i in range(4)]
    for subject in subjects:
        raw = mime(address, subject, attached("filename*=utf-8''a%00b.txt", "the data"))
        await deliver(inbound, raw, "ana@example.test", [address])
    assert await canary.send() < CANARY_WITHIN_S, canary.latencies
    for subject in subjects:
        message = await detail(api, address, subject)
        [meta] = message["attachment_metadata"]
        assert meta["filename"] == "a\ufffdb.txt" and "\x00" not in meta["filename"]
        status, _, data = await download(api, address, message["id"], meta["filename"])
        assert (status, data) == (200, b"the data")
        # Both archived (the two topics are read in batches of their own: either may come first).
        await eventually(
            lambda m=message: _with(archived(db, m["id"]), {"MessageArrived", "MessageReceived"}),
            timeout=20,
            interval=0.2,
        )
    assert await canary.send() < CANARY_WITHIN_S, canary.latencies


async def _with(found, kinds: set[str]) -> set[str] | None:
    types = await found
    return types if kinds <= types else None


async def test_an_event_the_database_refuses_is_parked_at_once_holding_no_one_up(
    operator: Api, relay_factory, service_env: dict[str, str], db
) -> None:
    """An arrival carrying a NUL (as an older intake published them) put straight on the log: the
    consumers the database refuses it to park it at once, and another organization's send still
    reaches its relay within 2 s."""
    canary = await new_canary(operator, relay_factory)
    api = await new_org(operator)
    handle, _ = await make_identity(api, relay_factory())
    identity = await db.fetchrow("SELECT id, org_id FROM identities WHERE handle = $1", handle)
    prefix = service_env["SENDSTREAM_KAFKA_TOPIC_PREFIX"]
    template = {
        "org_id": str(identity["org_id"]), "identity_id": str(identity["id"]),
        "payload": {"conv_id": str(uuid.uuid4()), "message": {
            "message_id": str(uuid.uuid4()), "rfc_message_id": "<nul@client.example.test>",
            "from_addr": "ana@example.test", "to": [handle], "recipients": [handle],
            "content": Content(subject="a\x00b").model_dump(mode="json"),
            "raw": {"sha256": "0" * 64, "size": 1, "content_type": "message/rfc822"},
        }},
    }  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=service_env["KAFKA_BOOTSTRAP_SERVERS"])
    await producer.start()
    try:
        for _ in range(3):
            event = MessageArrived.model_validate({**template, "event_id": str(uuid.uuid4())})
            await producer.send_and_wait(
                topics.topic_of(event).name(prefix), event.model_dump_json().encode(),
                key=str(identity["id"]).encode(), headers=[("event-type", b"MessageArrived")],
            )  # fmt: skip
    finally:
        await producer.stop()
    latencies = [await canary.send() for _ in range(3)]
    assert max(latencies) < CANARY_WITHIN_S, latencies


async def test_a_received_body_too_large_to_travel_in_its_event_is_stored_whole(
    api: Api, relay: Relay, inbound: int
) -> None:
    """A body over SENDSTREAM_BODY_INLINE_MAX_BYTES goes by the blob store: the views read it back from
    there (the fuzz run found 250s lost: the projections looked for it in the wrong place and parked it)."""
    address = await new_mailbox(api, relay)
    subject = f"long {uuid.uuid4().hex[:6]}"
    text = "Lorem ipsum dolor sit amet.\r\n" * 4000  # 116 KB
    raw = (
        f"From: ana@example.test\r\nTo: {address}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@client.example.test>\r\n\r\n{text}\r\n"
    ).encode()
    await deliver(inbound, raw, "ana@example.test", [address])
    message = await detail(api, address, subject)
    assert message["body_text"].split() == text.split()


# --- finding 10: 451 forever --------------------------------------------------------------------------


async def test_a_non_ascii_local_part_in_from_is_stored(api: Api, relay: Relay, inbound: int) -> None:
    """`From: josé@…` written as raw UTF-8 (RFC 6532) is answered 250 and read as josé, not 451."""
    address = await new_mailbox(api, relay)
    subject = f"utf8 from {uuid.uuid4().hex[:6]}"
    raw = (
        f"From: Jos\u00e9 <jos\u00e9@example.test>\r\nTo: {address}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@client.example.test>\r\n\r\nOl\u00e1\r\n"
    ).encode()
    await deliver(inbound, raw, "bounce@example.test", [address])
    message = await detail(api, address, subject)
    assert message["from_address"] == "jos\u00e9@example.test" and message["body_text"].startswith("Ol\u00e1")


def nested(address: str, subject: str, depth: int) -> bytes:
    """A message whose text sits inside `depth` multiparts, one in the other."""
    head = f"From: ana@example.test\r\nTo: {address}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
    opening = "".join(f"Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n" for i in range(depth))
    closing = "".join(f"\r\n--b{i}--" for i in reversed(range(depth)))
    return (head + opening + "Content-Type: text/plain\r\n\r\ndeep inside" + closing + "\r\n").encode()


async def refused_code(port: int, raw: bytes, recipient: str) -> int | None:
    """The code the inbound server answers DATA with (None: 250)."""
    try:
        await deliver(port, raw, "ana@example.test", [recipient])
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code
    return None


async def test_structure_beyond_the_limits_is_refused_for_good_and_within_them_stored(
    api: Api, relay: Relay, inbound: int
) -> None:
    """A 3,000-deep multipart, one 33 deep, 501 parts and 1,001 header fields are each refused with 554
    at DATA (not 451: the sender would retry for days); 32 deep is stored."""
    address = await new_mailbox(api, relay)
    many_parts = mime(address, "parts", "".join(attached(f'filename="f{i}.txt"', "x") for i in range(500)))
    many_headers = (
        f"From: ana@example.test\r\nTo: {address}\r\nSubject: headers\r\n"
        + "".join(f"X-Filler-{i}: {i}\r\n" for i in range(1000))
        + "\r\nbody\r\n"
    ).encode()
    for raw in (nested(address, "very deep", 3000), nested(address, "deep", 33), many_parts, many_headers):
        assert await refused_code(inbound, raw, address) == 554
    subject = f"just deep enough {uuid.uuid4().hex[:6]}"
    assert await refused_code(inbound, nested(address, subject, 32), address) is None
    message = await detail(api, address, subject)
    assert message["body_text"].startswith("deep inside")


# --- finding 12: downloads -----------------------------------------------------------------------------


async def test_received_files_download_whatever_their_names_and_never_run(
    api: Api, relay: Relay, inbound: int
) -> None:
    """A name with an encoded CR LF downloads (no dropped connection), two files of one name are both
    reachable (`report.pdf`, `report-2.pdf`), and every download is an attachment, nosniff, HTML and
    SVG as bytes, never as a page."""
    address = await new_mailbox(api, relay)
    subject = f"files {uuid.uuid4().hex[:6]}"
    parts = [
        attached("filename*=utf-8''a%0D%0ASet-Cookie%3A%20x%3D1.txt", "crlf", "text/plain"),
        attached('filename="report.pdf"', "first", "application/pdf"),
        attached('filename="report.pdf"', "second", "application/pdf"),
        attached('filename="page.html"', "<script>alert(1)</script>", "text/html"),
        attached('filename="logo.svg"', "<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>",
                 "image/svg+xml"),
    ]  # fmt: skip
    await deliver(inbound, mime(address, subject, "".join(parts)), "ana@example.test", [address])
    message = await detail(api, address, subject)
    names = [a["filename"] for a in message["attachment_metadata"]]
    assert names == ["a Set-Cookie: x=1.txt", "report.pdf", "report-2.pdf", "page.html", "logo.svg"]
    got = {name: await download(api, address, message["id"], name) for name in names}
    assert [got[n][2] for n in names[:3]] == [b"crlf", b"first", b"second"]
    for name, (status, headers, _) in got.items():
        assert status == 200, name
        assert headers["X-Content-Type-Options"] == "nosniff", name
        assert headers["Content-Disposition"].startswith("attachment;"), name
        assert "Set-Cookie" not in headers
    for name in ("page.html", "logo.svg"):
        headers = got[name][1]
        assert headers["Content-Type"] == "application/octet-stream", headers
        assert "sandbox" in headers["Content-Security-Policy"]
    assert got["report.pdf"][1]["Content-Type"] == "application/pdf"
