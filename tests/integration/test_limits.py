"""Every limit holds in every dialect and under concurrency (issue 23, findings 6-8), on the real stack:
an inbox's hourly budget is shared by every route that sends from it and never overshoots; bodies over
the limit are 413 in every dialect; a file a receiving system would run is refused however it is named,
and a forward never re-sends one that arrived."""

from __future__ import annotations

import asyncio
import base64
import uuid

import pytest

from tests.conftest import Api, Relay, eventually
from tests.integration.test_mailboxes import listed, new_mailbox, receive

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + bytes(200)


async def test_150_concurrent_sends_by_every_route_to_one_inbox_admit_exactly_its_100(
    api: Api, relay: Relay
) -> None:
    """Finding 8: the inbox's 100 an hour holds under 150 concurrent sends spread over the inboxes,
    identities, mailboxes and /api/v1/mail routes: exactly 100 admitted and sent, the rest 429."""
    email = f"budget-{uuid.uuid4().hex[:6]}@agents.example.test"
    status, inbox, _ = await api.call("POST", "/v1/inboxes", {"email": email, "smtp": relay.smtp_settings()})
    assert status == 201, inbox
    routes = [
        (f"/v1/inboxes/{inbox['id']}/messages/send", lambda i: {"to": [f"r{i}@example.test"], "subject": "s", "text": "t", "html": "<p>t</p>"}),
        (f"/v1/identities/{email}/send", lambda i: {"to": f"r{i}@example.test", "subject": "s", "text": "t"}),
        (f"/mailboxes/{email}/messages", lambda i: {"recipients": {"to": [f"r{i}@example.test"]}, "subject": "s", "body_text": "t"}),
        (f"/api/v1/mail/mailboxes/{email}/messages", lambda i: {"recipients": {"to": [f"r{i}@example.test"]}, "subject": "s", "body_text": "t"}),
    ]  # fmt: skip

    async def one(i: int) -> int:
        path, body = routes[i % len(routes)]
        return (await api.call("POST", path, body(i)))[0]

    statuses = await asyncio.gather(*(one(i) for i in range(150)))
    admitted = [s for s in statuses if s in (200, 201, 202)]
    assert len(admitted) == 100 and statuses.count(429) == 50, sorted(statuses)
    await relay.wait_for(100, timeout=60)
    await asyncio.sleep(1)
    assert len(relay.received) == 100
    for path, body in routes:  # after the 429, no route sends from it
        assert (await api.call("POST", path, body(999)))[0] == 429, path


async def test_a_body_over_the_limit_is_413_in_every_dialect(api: Api, relay: Relay) -> None:
    """Finding 6: a route that takes files takes a large request, but not a body over
    SENDSTREAM_MAX_BODY_BYTES: 413 naming the field, and nothing is sent."""
    big = "a" * (2 * 1024 * 1024)
    status, inbox, _ = await api.call(
        "POST", "/v1/inboxes", {"email": f"big-{uuid.uuid4().hex[:6]}@agents.example.test", "smtp": relay.smtp_settings()}
    )  # fmt: skip
    status, body, _ = await api.call(
        "POST", f"/v1/inboxes/{inbox['id']}/messages/send", {"to": ["r@example.test"], "subject": "s", "text": big, "html": "h"}
    )  # fmt: skip
    assert status == 413 and body["message"].startswith("text: 2097152 bytes, over the limit"), body
    status, body, _ = await api.call(
        "POST", f"/v1/inboxes/{inbox['id']}/messages/send",
        {"to": ["r@example.test"], "subject": "s", "text": "t", "html": big},
    )  # fmt: skip
    assert status == 413 and body["message"].startswith("html: "), body

    address = await new_mailbox(api, relay)
    status, body, _ = await api.call(
        "POST", f"/mailboxes/{address}/messages",
        {"recipients": {"to": ["r@example.test"]}, "subject": "s", "body_text": big},
    )  # fmt: skip
    assert status == 413 and body["detail"]["message"].startswith("body_text: "), body

    async def through_inbox(subject: str) -> None:
        path = f"/v1/inboxes/{inbox['id']}/messages/send"
        body = {"to": ["m@example.test"], "subject": subject, "text": "m", "html": "<p>m</p>"}
        assert (await api.call("POST", path, body))[0] == 200

    async def through_mailbox(subject: str) -> None:
        body = {"recipients": {"to": ["m@example.test"]}, "subject": subject, "body_text": "m"}
        assert (await api.call("POST", f"/mailboxes/{address}/messages", body))[0] == 201

    assert await relay.before_marker(through_inbox) == []
    assert await relay.before_marker(through_mailbox) == []


@pytest.mark.parametrize("name", ["run.bat.", "run.bat ", "run.js::$DATA", "run.JS:stream", "setup．exe", "run.vbs. . "])
async def test_blocked_files_are_judged_by_the_name_a_receiving_system_gives_them(
    api: Api, relay: Relay, name: str
) -> None:
    """Finding 7: trailing dots and spaces, NTFS streams and fullwidth forms do not hide a blocked type."""
    address = await new_mailbox(api, relay)
    status, body, _ = await api.call("POST", f"/mailboxes/{address}/messages", {
        "recipients": {"to": ["r@example.test"]}, "subject": "s", "body_text": "t",
        "attachments": [{"filename": name, "content_type": "text/plain",
                         "content_base64": base64.b64encode(b"echo hi\r\n").decode()}],
    })  # fmt: skip
    assert status == 400 and "are blocked" in body["detail"]["message"] and name in body["detail"]["message"], body


async def test_a_forward_never_resends_a_received_executable(api: Api, relay: Relay, inbound: int) -> None:
    """Finding 7: a received `invoice.pdf.exe` is not sent on by a forward, inline with its files or
    wrapped; without its files the forward goes."""
    address = await new_mailbox(api, relay)
    await receive(inbound, address, "Invoice", attachment=("invoice.pdf.exe", EXE))
    [original] = await eventually(lambda: listed(api, address))
    url = f"/mailboxes/{address}/messages/{original['id']}/forward"
    to = {"to": ["lee@example.test"]}
    status, body, _ = await api.call("POST", url, {"recipients": to, "include_original_attachments": True})
    assert status == 400 and "invoice.pdf.exe" in body["detail"]["message"], body
    assert body["detail"]["message"].startswith("include_original_attachments"), body
    status, body, _ = await api.call("POST", url, {"recipients": to, "mode": "wrapped"})
    assert status == 400 and "invoice.pdf.exe" in body["detail"]["message"], body
    status, body, _ = await api.call("POST", url, {"recipients": to, "include_original_attachments": False})
    assert status == 201, body
    [sent] = await relay.wait_for(1)
    assert b"invoice.pdf.exe" not in sent.data
