"""The mailboxes dialect through its vendor's own Python SDK (`pip install inkbox`), unchanged.

    python examples/inkbox_sdk.py [base_url] [api_key]

Defaults: `make run`'s stack (http://127.0.0.1:8080, sk_live_localdev). It creates a mailbox (ours:
the SDK has no call for it), then lists, reads, sends with an attachment, forwards inline and wrapped,
flags, downloads an attachment and deletes, all through the SDK, checking each answer. Exits 0 when
every step did what the seed says.
"""

from __future__ import annotations

import base64
import sys
import time
import urllib.request
import uuid

import httpx
from inkbox import Inkbox


def main(base_url: str = "http://127.0.0.1:8080", api_key: str = "sk_live_localdev") -> None:
    address = f"sdk-{uuid.uuid4().hex[:8]}@agents.example.test"
    created = httpx.post(
        f"{base_url}/api/v1/mail/mailboxes", headers={"X-API-Key": api_key}, json={"email_address": address}
    )
    assert created.status_code == 201, created.text

    with Inkbox(api_key=api_key, base_url=base_url) as inkbox:
        mail = inkbox.messages
        assert address in [m.email_address for m in inkbox.mailboxes.list()]
        assert inkbox.mailboxes.get(address).email_address == address

        pdf = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
        sent = mail.send(
            address, to=["morgan@northwind.test"], cc=["sam@northwind.test"], subject="Q3 numbers",
            body_text="The numbers are attached.", body_html="<p>The numbers are attached.</p>",
            attachments=[{"filename": "q3.pdf", "content_type": "application/pdf",
                          "content_base64": base64.b64encode(pdf).decode()}],
        )  # fmt: skip
        assert sent.direction == "outbound" and sent.has_attachments and sent.subject == "Q3 numbers"

        detail = wait_for(lambda: mail.get(address, sent.id), lambda d: d.status in ("sent", "delivered"))
        assert detail.body_text == "The numbers are attached." and detail.cc_addresses == [
            "sam@northwind.test"
        ]
        assert detail.attachment_metadata[0]["filename"] == "q3.pdf"
        assert any(m.id == sent.id for m in mail.list(address, page_size=1))

        link = mail.get_attachment(address, sent.id, "q3.pdf")
        with urllib.request.urlopen(link["url"], timeout=10) as r:
            assert r.read() == pdf and r.headers["Content-Disposition"].startswith("attachment")

        inline = mail.forward(address, sent.id, to=["lee@northwind.test"], body_text="FYI")
        assert inline.subject == "Fwd: Q3 numbers" and inline.thread_id != sent.thread_id
        wrapped = mail.forward(address, sent.id, to=["lee@northwind.test"], mode="wrapped")
        assert wrapped.subject == "Fwd: Q3 numbers" and wrapped.message_id != sent.message_id

        assert mail.mark_read(address, sent.id).is_read
        assert mail.star(address, sent.id).is_starred
        got = mail.get(address, sent.id)
        assert got.is_read and got.is_starred

        mail.delete(address, wrapped.id)
        assert wrapped.id not in [m.id for m in mail.list(address)]
        print(f"inkbox SDK against {base_url}: mailbox {address}: list, get, send, forward, flags, "
              "download and delete all work")  # fmt: skip


def wait_for(read, done, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while True:
        got = read()
        if done(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


if __name__ == "__main__":
    main(*sys.argv[1:])
