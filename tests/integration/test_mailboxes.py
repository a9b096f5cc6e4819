"""The mailboxes dialect (SPEC 3.3) on the real stack: the seed's routes, fields and limits on the wire,
forwards as the relay receives them, flags and deletes, signed downloads, the per-mailbox rate limit,
and the seed's own SDK (`inkbox`) unchanged."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import make_msgid
from types import SimpleNamespace

import aiohttp
import pytest
from standardwebhooks import Webhook

from schemas.limits import FINAL_MIME_MAX
from services.common.domain import signed
from tests.conftest import Api, Receiver, Relay, deliver, eventually, new_org
from tests.integration.test_send import make_identity

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

ITEM_FIELDS = {
    "id", "mailbox_id", "thread_id", "message_id", "from_address", "to_addresses", "cc_addresses", "subject",
    "snippet", "direction", "status", "is_read", "is_starred", "has_attachments", "reply_to", "created_at",
}  # fmt: skip
DETAIL_FIELDS = ITEM_FIELDS | {
    "body_text", "body_html", "bcc_addresses", "in_reply_to", "references", "attachment_metadata",
    "ses_message_id", "updated_at",
}  # fmt: skip
PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def new_mailbox(api: Api, relay: Relay | None = None) -> str:
    address = f"mb-{uuid.uuid4().hex[:8]}@agents.example.test"
    body = {"email_address": address, **({"smtp": relay.smtp_settings()} if relay else {})}
    status, mailbox, _ = await api.call("POST", "/mailboxes", body)
    assert status == 201, mailbox
    return address


async def send(api: Api, address: str, **fields) -> dict:
    body = {"recipients": {"to": ["ana@example.test"]}, "subject": "Hello", "body_text": "Hi Ana", **fields}
    status, sent, _ = await api.call("POST", f"/mailboxes/{address}/messages", body)
    assert status == 201, sent
    return sent


async def receive(
    port: int, address: str, subject: str, *, attachment: tuple[str, bytes] | None = None
) -> str:
    """Mail from outside, through the inbound SMTP server; its Message-ID."""
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "Ana Lima <ana@example.test>", address, subject
    m["Message-ID"] = make_msgid(domain="client.example.test")
    m["Reply-To"] = "ana.replies@example.test"
    m.set_content("Please see the report.\nThanks, Ana")
    if attachment:
        m.add_attachment(attachment[1], maintype="application", subtype="pdf", filename=attachment[0])
    await deliver(port, m, "ana@example.test", [address])
    return m["Message-ID"]


async def listed(api: Api, address: str, **query) -> list[dict]:
    path = f"/mailboxes/{address}/messages?" + "&".join(f"{k}={v}" for k, v in query.items())
    status, page, _ = await api.call("GET", path)
    assert status == 200, page
    return page["items"]


async def test_mailboxes_are_created_listed_and_read_by_address_with_either_key_header(
    api: Api, operator: Api, relay: Relay
) -> None:
    address = await new_mailbox(api, relay)
    status, mailbox, _ = await api.call("GET", f"/mailboxes/{address}")
    assert status == 200 and mailbox["email_address"] == address and uuid.UUID(mailbox["id"])
    assert mailbox["sending_domain"] == "agents.example.test"
    _, every, _ = await api.call("GET", "/mailboxes")
    assert mailbox in every

    # the SDK's prefix and header: the same routes
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{api.base}/api/v1/mail/mailboxes/{address}", headers={"X-API-Key": api.key}) as r:
            assert r.status == 200 and await r.json() == mailbox
        async with s.get(f"{api.base}/api/v1/mail/mailboxes/{address}") as r:
            assert r.status == 401

    # another organization's mailbox is not found, in this dialect's error shape
    other = await new_org(operator)
    status, body, _ = await other.call("GET", f"/mailboxes/{address}")
    assert status == 404 and body == {"detail": {"error": "not_found", "message": "Mailbox not found"}}
    status, body, _ = await other.call("GET", f"/mailboxes/{address}/messages")
    assert status == 404
    status, body, _ = await api.call("POST", "/mailboxes", {"email_address": address})
    assert status == 409, body


async def test_send_answers_a_list_item_and_the_message_reads_back_whole(api: Api, relay: Relay) -> None:
    address = await new_mailbox(api, relay)
    relay.replies.append("250 2.0.0 Ok: queued as 4F9A2B1C")
    status, sent, headers = await api.call(
        "POST", f"/mailboxes/{address}/messages",
        {"recipients": {"to": ["ana@example.test"], "cc": ["bo@example.test"], "bcc": ["audit@example.test"]},
         "subject": "Q3 numbers", "body_text": "Numbers attached.\n" + "x" * 300, "body_html": "<p>Numbers</p>",
         "reply_to": "desk@agents.example.test",
         "attachments": [{"filename": "q3.pdf", "content_type": "application/pdf", "content_base64": b64(PDF)}]},
    )  # fmt: skip
    assert status == 201, sent
    assert set(sent) == ITEM_FIELDS
    assert (
        sent["status"] in ("queued", "sent") and sent["direction"] == "outbound" and sent["has_attachments"]
    )
    assert (sent["from_address"], sent["to_addresses"], sent["cc_addresses"]) == (
        address, ["ana@example.test"], ["bo@example.test"]
    )  # fmt: skip
    assert sent["reply_to"] == "desk@agents.example.test" and len(sent["snippet"]) == 200
    assert headers["X-RateLimit-Limit"] == "600" and headers["X-RateLimit-Remaining"] == "599"
    assert int(headers["X-RateLimit-Reset"]) > time.time()

    [got] = await relay.wait_for(1)
    m = got.message
    assert (
        m["Reply-To"] == "desk@agents.example.test"
        and "Bcc" not in m
        and m["Message-ID"] == sent["message_id"]
    )
    assert sorted(got.rcpt_tos) == ["ana@example.test", "audit@example.test", "bo@example.test"]
    [pdf] = list(m.iter_attachments())
    assert pdf.get_filename() == "q3.pdf" and pdf.get_content() == PDF

    async def detail():
        _, d, _ = await api.call("GET", f"/mailboxes/{address}/messages/{sent['id']}")
        return d if d.get("status") == "sent" else None

    d = await eventually(detail)
    assert set(d) == DETAIL_FIELDS
    assert (d["body_text"], d["body_html"], d["bcc_addresses"]) == (
        "Numbers attached.\n" + "x" * 300, "<p>Numbers</p>", ["audit@example.test"]
    )  # fmt: skip
    assert d["attachment_metadata"] == [
        {"filename": "q3.pdf", "content_type": "application/pdf", "size": len(PDF)}
    ]
    assert d["ses_message_id"] == "4F9A2B1C" and d["updated_at"].endswith("Z")
    [item] = await listed(api, address)
    assert item == {**sent, "status": "sent", "created_at": item["created_at"]}


async def test_bad_requests_are_400_naming_the_field(api: Api, relay: Relay) -> None:
    address = await new_mailbox(api, relay)
    url = f"/mailboxes/{address}/messages"
    base = {"recipients": {"to": ["ana@example.test"]}, "subject": "Hi", "body_text": "x"}
    cases = {
        "subject": {**base, "subject": "s" * 999},
        "recipients.to": {**base, "recipients": {"to": [], "cc": ["bo@example.test"]}},
        "recipients": {k: v for k, v in base.items() if k != "recipients"},
        "attachments[0] (run.exe)": {
            **base, "attachments": [{"filename": "run.exe", "content_type": "application/pdf", "content_base64": b64(PDF)}]
        },
        "reply_to": {**base, "reply_to": "not an address"},
        "in_reply_to_message_id": {**base, "in_reply_to_message_id": "<a@b>\r\nBcc: x@example.test"},
    }  # fmt: skip
    for field, body in cases.items():
        status, answer, _ = await api.call("POST", url, body)
        assert status == 400, (field, answer)
        assert field in answer["detail"]["message"], (field, answer)
    assert (await api.call("POST", url, {**base, "subject": "s" * 998}))[0] == 201

    forward = f"/mailboxes/{address}/messages/{uuid.uuid4()}/forward"
    status, answer, _ = await api.call("POST", forward, {"recipients": {}})
    assert status == 400 and "recipients" in answer["detail"]["message"]
    for query in ("limit=0", "limit=101", "limit=x", "direction=sideways", "cursor=%%%"):
        status, answer, _ = await api.call("GET", f"{url}?{query}")
        assert status == 400, (query, answer)
    assert len(await listed(api, address, limit=100)) == 1  # nothing refused was sent or stored


async def test_pages_stay_stable_while_messages_arrive(api: Api, relay: Relay, inbound: int) -> None:
    """Three pages of three, with new mail sent and received between them: the pages hold exactly the
    messages there were at the start, newest first, none twice; the new ones lead the next listing."""
    address = await new_mailbox(api, relay)
    first = [(await send(api, address, subject=f"old {i}"))["id"] for i in range(8)]
    await receive(inbound, address, "old inbound")
    await eventually(lambda: _count(api, address, 9))
    seen: list[dict] = []
    cursor = None
    for page_no in range(3):
        query = "limit=3" + (f"&cursor={cursor}" if cursor else "")
        status, page, _ = await api.call("GET", f"/mailboxes/{address}/messages?{query}")
        assert status == 200 and len(page["items"]) == 3, page
        seen += page["items"]
        await send(api, address, subject=f"new during page {page_no}")
        await receive(inbound, address, f"new inbound during page {page_no}")
        cursor = page["next_cursor"]
        assert page["has_more"] == (page_no < 2) and (cursor is not None) == page["has_more"]
    ids = [m["id"] for m in seen]
    assert len(set(ids)) == 9 and set(first) <= set(ids)
    assert [m["subject"] for m in seen][1:] == [f"old {i}" for i in reversed(range(8))]
    assert [m["created_at"] for m in seen] == sorted((m["created_at"] for m in seen), reverse=True)

    await eventually(lambda: _count(api, address, 15))
    inbound_only = await listed(api, address, direction="inbound", limit=100)
    assert len(inbound_only) == 4 and {m["direction"] for m in inbound_only} == {"inbound"}
    assert {m["status"] for m in inbound_only} == {"received"}
    assert inbound_only[-1]["reply_to"] == "ana.replies@example.test"
    assert len(await listed(api, address, direction="outbound", limit=100)) == 11


async def _count(api: Api, address: str, n: int) -> bool:
    return len(await listed(api, address, limit=100)) >= n


async def test_in_reply_to_message_id_threads_a_reply_to_received_mail(
    api: Api, relay: Relay, inbound: int
) -> None:
    address = await new_mailbox(api, relay)
    received_id = await receive(inbound, address, "Question about pricing")
    [original] = await eventually(lambda: listed(api, address))
    reply = await send(
        api, address, subject="Re: Question about pricing", in_reply_to_message_id=received_id,
        recipients={"to": ["ana@example.test"], "cc": ["bo@example.test"]},
    )  # fmt: skip
    assert reply["thread_id"] == original["thread_id"]
    [got] = await relay.wait_for(1)
    assert got.message["In-Reply-To"] == received_id and received_id in got.message["References"]
    assert got.message["Subject"] == "Re: Question about pricing" and got.message["Cc"] == "bo@example.test"

    # a Message-ID that is not one of this mailbox's: a new thread, threaded by its headers alone
    elsewhere = "<abc123@elsewhere.example.test>"
    other = await send(api, address, subject="Following up", in_reply_to_message_id=elsewhere)
    assert other["thread_id"] not in (original["thread_id"], None)
    [_, got] = await relay.wait_for(2)
    assert got.message["In-Reply-To"] == elsewhere


def parts(raw: bytes) -> EmailMessage:
    return message_from_bytes(raw, policy=policy.default)  # type: ignore[return-value]


async def test_forward_inline_and_wrapped_as_the_relay_receives_them(
    api: Api, relay: Relay, inbound: int, receiver: Receiver
) -> None:
    status, hook, _ = await api.call(
        "POST", "/v1/webhooks", {"url": receiver.url("/fwd"), "events": ["message.forwarded", "message.sent"]}
    )
    assert status == 201, hook
    address = await new_mailbox(api, relay)
    original_id = await receive(inbound, address, "Q3 report", attachment=("report.pdf", PDF))
    [original] = await eventually(lambda: listed(api, address))
    url = f"/mailboxes/{address}/messages/{original['id']}/forward"
    mine = b"%PDF-1.4\n% the caller's own report\n%%EOF\n"

    status, inline, _ = await api.call(
        "POST", url,
        {"recipients": {"to": ["lee@example.test"]}, "body_text": "FYI, see below.",
         "additional_attachments": [{"filename": "report.pdf", "content_type": "application/pdf",
                                     "content_base64": b64(mine)}]},
    )  # fmt: skip
    assert status == 201, inline
    assert set(inline) == ITEM_FIELDS and inline["subject"] == "Fwd: Q3 report"
    assert inline["thread_id"] != original["thread_id"] and inline["message_id"] != original_id
    [got] = await relay.wait_for(1)
    m = parts(got.data)
    assert m["X-Forwarded-Message-Id"].strip() == original_id and m["Message-ID"] == inline["message_id"]
    text = m.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text.startswith("FYI, see below.\n\n---------- Forwarded message ---------\n")
    for line in (
        "From: ana@example.test",
        "Date: ",
        "Subject: Q3 report",
        f"To: {address}",
        "Please see the report.",
    ):
        assert line in text, (line, text)
    files = {a.get_filename(): a.get_content() for a in m.iter_attachments()}
    assert files == {"report.pdf": mine, "forwarded-report.pdf": PDF}  # the caller's file wins

    status, wrapped, _ = await api.call(
        "POST", url, {"recipients": {"to": ["lee@example.test"]}, "mode": "wrapped", "body_text": "Attached."}
    )
    assert status == 201, wrapped
    [_, got] = await relay.wait_for(2)
    m = parts(got.data)
    assert m.get_content_type() == "multipart/mixed" and m["X-Forwarded-Message-Id"].strip() == original_id
    body, enclosed = list(m.iter_parts())
    assert body.get_content().strip() == "Attached." and enclosed.get_content_type() == "message/rfc822"
    inner = enclosed.get_content()
    assert inner["Message-ID"] == original_id and inner["Subject"] == "Q3 report"
    assert [a.get_content() for a in inner.iter_attachments()] == [PDF]

    # Fwd: is never doubled (nor Fw:); no subject becomes Fwd: (no subject)
    for subject, expected in (
        ("Fwd: Q3 report", "Fwd: Q3 report"),
        ("FW: plan", "FW: plan"),
        ("", "Fwd: (no subject)"),
    ):
        received = await receive(inbound, address, subject)
        [item] = await eventually(lambda r=received: _by_message_id(api, address, r))
        status, again, _ = await api.call(
            "POST", f"/mailboxes/{address}/messages/{item['id']}/forward", {"recipients": {"cc": ["lee@example.test"]}}
        )  # fmt: skip
        assert status == 201 and again["subject"] == expected, again

    hooks = await receiver.wait_for("/fwd", 5)
    kinds = [Webhook(hook["secret"]).verify(h.body, h.headers)["type"] for h in hooks]
    assert kinds == ["message.forwarded"] * 5
    data = json.loads(hooks[0].body)["data"]
    assert set(data) == ITEM_FIELDS and data["subject"].startswith("Fwd:")


async def _by_message_id(api: Api, address: str, rfc_id: str) -> list[dict]:
    return [m for m in await listed(api, address, limit=100) if m["message_id"] == rfc_id]


async def test_forward_limits_a_raw_that_was_not_kept_and_an_unknown_original(
    api: Api, relay: Relay, inbound: int, db
) -> None:
    address = await new_mailbox(api, relay)
    await receive(inbound, address, "Big one", attachment=("big.pdf", PDF + b"0" * (3 * 1024 * 1024)))
    [original] = await eventually(lambda: listed(api, address))
    url = f"/mailboxes/{address}/messages/{original['id']}/forward"
    extra = [
        {
            "filename": "more.pdf",
            "content_type": "application/pdf",
            "content_base64": b64(PDF + b"1" * (5 * 1024 * 1024)),
        }
    ]
    status, answer, _ = await api.call(
        "POST", url, {"recipients": {"to": ["lee@example.test"]}, "additional_attachments": extra}
    )
    assert status == 400 and f"{FINAL_MIME_MAX // 1024 // 1024} MB" in answer["detail"]["message"], answer
    blocked = [{"filename": "x.bat", "content_type": "text/plain", "content_base64": b64(b"echo")}]
    status, answer, _ = await api.call(
        "POST", url, {"recipients": {"to": ["lee@example.test"]}, "additional_attachments": blocked}
    )
    assert status == 400 and "x.bat" in answer["detail"]["message"]

    await db.execute("UPDATE messages SET raw_sha256 = NULL WHERE id = $1", uuid.UUID(original["id"]))
    status, answer, _ = await api.call(
        "POST", url, {"recipients": {"to": ["lee@example.test"]}, "mode": "wrapped"}
    )
    assert status == 422, answer
    status, answer, _ = await api.call(
        "POST", f"/mailboxes/{address}/messages/{uuid.uuid4()}/forward", {"recipients": {"to": ["lee@example.test"]}}
    )  # fmt: skip
    assert status == 404 and answer["detail"]["message"] == "Message not found"
    assert relay.received == []


async def test_flags_and_delete_and_a_message_read_through_every_dialect(api: Api, relay: Relay) -> None:
    address = await new_mailbox(api, relay)
    sent = await send(api, address, subject="Across dialects")
    url = f"/mailboxes/{address}/messages/{sent['id']}"
    status, flagged, _ = await api.call("PATCH", url, {"is_read": True})
    assert status == 200 and flagged["is_read"] and not flagged["is_starred"]
    status, flagged, _ = await api.call("PATCH", url, {"is_starred": True, "is_read": False})
    assert status == 200 and not flagged["is_read"] and flagged["is_starred"]
    _, d, _ = await api.call("GET", url)
    assert (d["is_read"], d["is_starred"]) == (False, True)
    assert (await api.call("PATCH", url, {"is_read": "yes"}))[0] == 400

    # the same message through the inboxes and identities dialects
    _, mailbox, _ = await api.call("GET", f"/mailboxes/{address}")
    inbox = "inbox_" + uuid.UUID(mailbox["id"]).hex
    message = "msg_" + uuid.UUID(sent["id"]).hex
    status, seen, _ = await api.call("GET", f"/v1/inboxes/{inbox}/messages/{message}")
    assert status == 200 and seen["subject"] == "Across dialects"
    conv = "conv_" + uuid.UUID(sent["thread_id"]).hex
    status, thread, _ = await api.call("GET", f"/v1/conversations/{conv}")
    assert status == 200 and [m["subject"] for m in thread["messages"]] == ["Across dialects"], thread
    # and an inboxes send through this dialect
    status, other, _ = await api.call(
        "POST", f"/v1/inboxes/{inbox}/messages/send",
        {"to": ["bo@example.test"], "subject": "From inboxes", "text": "t", "html": "<p>t</p>"},
    )  # fmt: skip
    assert status == 200, other
    seen = await eventually(lambda: _read(api, f"/mailboxes/{address}/messages/{uuid.UUID(other['id'][4:])}"))
    assert seen["subject"] == "From inboxes", seen

    status, _, _ = await api.call("DELETE", url)
    assert status == 204
    assert (await api.call("GET", url))[0] == 404
    assert (await api.call("DELETE", url))[0] == 404
    assert sent["id"] not in [m["id"] for m in await listed(api, address)]
    assert (await api.call("GET", f"/v1/inboxes/{inbox}/messages/{message}"))[0] == 404
    _, thread, _ = await api.call("GET", f"/v1/conversations/{conv}")
    assert thread.get("messages", []) == []

    async def trail_types() -> list[str] | None:  # the archive may be a moment behind the views
        status, trail, _ = await api.call("GET", f"/v1/messages/{message}/events")
        types = [e["type"] for e in trail["data"]] if status == 200 else []
        return types if "MessageDeleted" in types else None

    types = await eventually(trail_types)
    assert types.count("MessageFlagsChanged") == 2, types


async def test_an_identities_send_reads_in_this_dialect_and_no_organization_reads_anothers(
    api: Api, operator: Api, relay: Relay
) -> None:
    handle, [account] = await make_identity(api, relay)
    status, sent, _ = await api.call(
        "POST", f"/v1/identities/{handle}/send", {"to": "ana@example.test", "subject": "From a pool", "text": "t"}
    )  # fmt: skip
    assert status == 202, sent
    [item] = await eventually(lambda: _by_message_id(api, handle, sent["messages"][0]["id"]))
    message_id = item["id"]
    seen = await _read(api, f"/mailboxes/{handle}/messages/{message_id}")
    assert (seen["subject"], seen["from_address"]) == ("From a pool", account["email"])

    other = await new_org(operator)
    theirs = await new_mailbox(other, relay)
    status, body, _ = await other.call("GET", f"/mailboxes/{theirs}/messages/{message_id}")
    assert status == 404 and body["detail"]["message"] == "Message not found"
    for method, body in (("GET", None), ("PATCH", {"is_read": True}), ("DELETE", None)):
        assert (await other.call(method, f"/mailboxes/{handle}/messages/{message_id}", body))[0] == 404
    assert (await other.call("GET", f"/mailboxes/{handle}/messages/{message_id}/attachments/x.pdf"))[0] == 404
    status, body, _ = await other.call(
        "POST", f"/mailboxes/{theirs}/messages/{message_id}/forward", {"recipients": {"to": ["lee@example.test"]}}
    )  # fmt: skip
    assert status == 404
    assert (await api.call("GET", f"/mailboxes/{handle}/messages/{message_id}"))[0] == 200  # still there


async def _read(api: Api, path: str) -> dict | None:
    status, body, _ = await api.call("GET", path)
    return body if status == 200 else None


async def test_attachment_downloads_through_signed_links_only(api: Api, relay: Relay, service_env) -> None:
    address = await new_mailbox(api, relay)
    sent = await send(
        api, address, attachments=[{"filename": "résumé 2026.pdf", "content_type": "application/pdf",
                                    "content_base64": b64(PDF)}],
    )  # fmt: skip
    url = f"/mailboxes/{address}/messages/{sent['id']}/attachments/r%C3%A9sum%C3%A9%202026.pdf"
    status, link, _ = await api.call("GET", url + "?redirect=false")
    assert status == 200 and link["filename"] == "résumé 2026.pdf" and link["expires_in"] == 900, link
    async with aiohttp.ClientSession() as s:
        async with s.get(
            api.base + url, headers={"Authorization": f"Bearer {api.key}"}, allow_redirects=False
        ) as r:
            assert r.status == 302 and r.headers["Location"].startswith(f"{api.base}/downloads/")
        async with s.get(link["url"]) as r:  # no key: the link is the authority
            assert r.status == 200 and await r.read() == PDF
            assert r.headers["Content-Type"] == "application/pdf"
            assert r.headers["Content-Disposition"].startswith("attachment;")
            assert "filename*=UTF-8''r%C3%A9sum%C3%A9%202026.pdf" in r.headers["Content-Disposition"]

        token = link["url"].rpartition("/")[2]
        tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
        async with s.get(f"{api.base}/downloads/{tampered}") as r:
            assert r.status == 403 and "not valid" in (await r.json())["error"]["message"]

        settings = SimpleNamespace(
            unsubscribe_secret=None, secret_keys=json.loads(service_env["SENDSTREAM_SECRET_KEYS"])
        )
        key = signed.key_for(settings, "download")
        claims = json.loads(signed.opened(key, token))
        claims[3] = int(time.time()) - 1
        expired = signed.sign(key, json.dumps(claims, separators=(",", ":")).encode())
        async with s.get(f"{api.base}/downloads/{expired}") as r:
            assert r.status == 403 and "expired" in (await r.json())["error"]["message"]
    assert (await api.call("GET", url.replace("2026.pdf", "2027.pdf")))[0] == 404


async def test_the_601st_send_in_an_hour_is_429_with_the_rate_headers(api: Api, relay: Relay) -> None:
    address = await new_mailbox(api, relay)
    url = f"/mailboxes/{address}/messages"
    body = {"recipients": {"to": ["ana@example.test"]}, "subject": "Burst", "body_text": "x"}
    gate = asyncio.Semaphore(24)

    async def one(i: int) -> int:
        async with gate:
            return (await api.call("POST", url, body, headers={"Idempotency-Key": f"burst-{i}"}))[0]

    statuses = await asyncio.gather(*(one(i) for i in range(600)))
    assert statuses == [201] * 600
    status, answer, headers = await api.call("POST", url, body)
    assert status == 429 and answer["detail"]["error"] == "rate_limited", answer
    assert headers["X-RateLimit-Limit"] == "600" and headers["X-RateLimit-Remaining"] == "0"
    assert 0 < int(headers["Retry-After"]) <= 3600 and int(headers["X-RateLimit-Reset"]) > time.time()
    # a replay of an admitted send spends nothing and is still answered
    status, _, headers = await api.call("POST", url, body, headers={"Idempotency-Key": "burst-7"})
    assert status == 201 and headers["Idempotent-Replayed"] == "true"


async def test_the_inkbox_sdk_works_unchanged(api: Api, stack) -> None:
    """The seed's own client, pointed at sendstream: examples/inkbox_sdk.py (also run against `make run`'s
    stack by tests/integration/test_readme.py)."""
    from examples.inkbox_sdk import main  # noqa: PLC0415 - the example, as a user runs it

    await asyncio.to_thread(main, api.base, api.key)
