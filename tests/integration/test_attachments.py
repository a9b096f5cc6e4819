"""Attachments through the inboxes dialect on the real stack: byte-identical at a real relay, with their
names (RFC 2231 for non-ASCII ones) and types; refused (400 naming the file, nothing sent) when blocked,
mislabelled or too large; kept in the blob store with the raw message; shown whole on GET."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid

import asyncpg
import pytest

from services.common.domain.blobs import PostgresBlobs
from tests.conftest import Api, Relay, eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(2000)
PDF = b"%PDF-1.7\n" + os.urandom(3000) + b"\n%%EOF\n"
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + os.urandom(500)


def upload(name: str, data: bytes, content_type: str) -> dict:
    return {"name": name, "contentType": content_type, "content": base64.b64encode(data).decode()}


async def new_inbox(api: Api, relay: Relay) -> dict:
    email = f"files-{uuid.uuid4().hex[:6]}@agents.example.test"
    status, inbox, _ = await api.call("POST", "/v1/inboxes", {"email": email, "smtp": relay.smtp_settings()})
    assert status == 201, inbox
    return inbox


def send_body(*attachments: dict) -> dict:
    return {"to": ["ana@example.test"], "subject": "Files", "text": "See attached.", "html": "<p>See attached.</p>",
            "attachments": list(attachments)}  # fmt: skip


async def test_attachments_arrive_byte_identical_with_their_names_and_types(
    api: Api, relay: Relay, db: asyncpg.Pool
) -> None:
    inbox = await new_inbox(api, relay)
    notes = "Grüße aus Köln\n".encode() * 50
    files = [
        upload("chart.png", PNG, "image/png"),
        upload("Angebot für Zoë – 2026.pdf", PDF, "application/pdf"),
        upload("notes.txt", notes, "text/plain"),
    ]
    status, sent, _ = await api.call("POST", f"/v1/inboxes/{inbox['id']}/messages/send", send_body(*files))
    assert status == 200 and sent["status"] == "sent", sent
    assert sent["attachments"] == [
        {"name": "chart.png", "contentType": "image/png", "size": len(PNG), "content": None},
        {"name": "Angebot für Zoë – 2026.pdf", "contentType": "application/pdf", "size": len(PDF), "content": None},
        {"name": "notes.txt", "contentType": "text/plain", "size": len(notes), "content": None},
    ]  # fmt: skip

    [got] = await relay.wait_for(1)
    m = got.message
    assert m.get_content_type() == "multipart/mixed"
    assert [
        (a.get_filename(), a.get_content_type(), a.get_payload(decode=True)) for a in m.iter_attachments()
    ] == [
        ("chart.png", "image/png", PNG),
        ("Angebot für Zoë – 2026.pdf", "application/pdf", PDF),
        ("notes.txt", "text/plain", notes),
    ]
    assert b"filename*=utf-8''Angebot%20f%C3%BCr%20Zo%C3%AB%20%E2%80%93%202026.pdf" in got.data  # RFC 2231
    assert m.get_body(("plain",)).get_content().strip() == "See attached."

    async def whole() -> dict | None:
        status, body, _ = await api.call("GET", f"/v1/inboxes/{inbox['id']}/messages/{sent['id']}")
        return body if status == 200 and body["externalMessageId"] else None

    message = await eventually(whole, timeout=10)
    assert [
        (a["name"], a["contentType"], base64.b64decode(a["content"])) for a in message["attachments"]
    ] == [
        ("chart.png", "image/png", PNG),
        ("Angebot für Zoë – 2026.pdf", "application/pdf", PDF),
        ("notes.txt", "text/plain", notes),
    ]
    # listings name the files without their bytes
    [listed] = (await api.call("GET", f"/v1/inboxes/{inbox['id']}/messages"))[1]
    assert [(a["name"], a["size"], a["content"]) for a in listed["attachments"]] == [
        ("chart.png", len(PNG), None), ("Angebot für Zoë – 2026.pdf", len(PDF), None), ("notes.txt", len(notes), None)
    ]  # fmt: skip

    # the raw message the relay took is kept, byte for byte, and each file once in the blob store
    message_id = uuid.UUID(sent["id"].removeprefix("msg_"))

    async def raw_kept() -> str | None:
        return await db.fetchval("SELECT raw_sha256 FROM messages WHERE id = $1", message_id)

    raw_sha = await eventually(raw_kept, timeout=10)
    assert await PostgresBlobs(db).get(raw_sha) == got.data
    for data in (PNG, PDF, notes):
        count = await db.fetchval(
            "SELECT count(*) FROM blobs WHERE sha256 = $1", hashlib.sha256(data).digest()
        )
        assert count == 1


async def test_refused_attachments_are_400_naming_the_file_and_nothing_is_sent(
    api: Api, relay: Relay
) -> None:
    inbox = await new_inbox(api, relay)
    path = f"/v1/inboxes/{inbox['id']}/messages/send"
    ok = upload("chart.png", PNG, "image/png")
    refused = [
        (upload("setup.exe", os.urandom(100), "application/octet-stream"), "attachments[1] (setup.exe): files of type .exe are blocked"),
        (upload("invoice.pdf", EXE, "application/pdf"), "attachments[1] (invoice.pdf): the content is an executable"),
        (upload("photo.png", PDF, "image/png"), "attachments[1] (photo.png): contentType is image/png but the content is application/pdf"),
        (upload("run.sh", b"#!/bin/sh\necho hi\n", "application/x-sh"), "attachments[1] (run.sh): files of type application/x-sh are blocked"),
        ({**ok, "content": "not base64!"}, "attachments[1].content: is not valid base64"),
        ({**ok, "name": "../etc/passwd"}, "attachments[1].name: must be a file name"),
    ]  # fmt: skip
    for bad, words in refused:
        status, body, _ = await api.call("POST", path, send_body(ok, bad))
        assert status == 400 and body["error"] == "invalid_request", body
        assert body["message"].startswith(words), body["message"]

    # more than 25 MB of files: the one that crosses the limit is named
    big = [upload(f"part-{i}.bin", os.urandom(9 * 1024 * 1024), "application/octet-stream") for i in range(3)]
    status, body, _ = await api.call("POST", path, send_body(*big))
    assert status == 400 and body["message"].startswith(
        "attachments[2] (part-2.bin): the attachments come to more than 25 MB"
    ), body
    # under 25 MB of files, but over 10 MB once composed (base64 adds a third)
    status, body, _ = await api.call(
        "POST", path, send_body(upload("video.bin", os.urandom(8 * 1024 * 1024), "application/octet-stream"))
    )
    assert status == 400 and body["message"].startswith("attachments (video.bin): the message would be"), body
    assert "over the 10 MB limit" in body["message"]

    async def marker(subject: str) -> None:
        body = {"to": ["m@example.test"], "subject": subject, "text": "m", "html": "<p>m</p>"}
        assert (await api.call("POST", path, body))[0] == 200

    assert await relay.before_marker(marker) == []
    _, listed, _ = await api.call("GET", f"/v1/inboxes/{inbox['id']}/messages")
    assert [m["subject"] for m in listed if not m["subject"].startswith("marker ")] == []


async def test_large_bodies_travel_as_blob_references_and_arrive_whole(
    api: Api, relay: Relay, db: asyncpg.Pool
) -> None:
    """Bodies over SENDSTREAM_BODY_INLINE_MAX_BYTES (64 KiB) are stored once and referenced from the
    events; the relay, the message view and search see them whole."""
    inbox = await new_inbox(api, relay)
    text = "zanzibarquartz " + "Lorem ipsum dolor sit amet. " * 12_000  # ~330 KB
    html = "<p>" + "Grüße " * 40_000 + "</p>"  # ~290 KB, not ASCII
    body = {"to": ["ana@example.test"], "subject": "Long read", "text": text, "html": html}
    status, sent, _ = await api.call("POST", f"/v1/inboxes/{inbox['id']}/messages/send", body)
    assert status == 200 and sent["text"] == text, sent.get("message")

    [got] = await relay.wait_for(1)
    assert got.message.get_body(("plain",)).get_content() == text
    assert got.message.get_body(("html",)).get_content() == html

    message_id = uuid.UUID(sent["id"].removeprefix("msg_"))
    requested = await eventually(
        lambda: db.fetchval(
            """SELECT event FROM event_archive
                WHERE message_ids @> ARRAY[$1]::uuid[] AND type = 'SendRequested'""",
            message_id,
        )
    )
    content = requested["payload"]["content"]
    assert content["text"] is None and content["html"] is None
    assert content["text_blob"]["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert content["html_blob"]["size"] == len(html.encode())

    async def whole() -> dict | None:
        status, m, _ = await api.call("GET", f"/v1/inboxes/{inbox['id']}/messages/{sent['id']}")
        return m if status == 200 and m["externalMessageId"] else None

    message = await eventually(whole, timeout=10)
    assert (message["text"], message["html"]) == (text, html)
    _, found, _ = await api.call("GET", f"/v1/inboxes/{inbox['id']}/messages?query=zanzibarquartz")
    assert [m["id"] for m in found] == [sent["id"]]
