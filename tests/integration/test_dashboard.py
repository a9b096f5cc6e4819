"""The dashboard (SPEC 3.7) in a real browser: Debian's Chromium, headless, driven by Playwright, against
the real stack. A person logs in with an API key, reads a conversation and a message's timeline,
approves a draft (the mail reaches the relay), cancels a scheduled send, and sees new mail arrive
without a reload. Hostile mail runs nothing and loads nothing; another organization's pages are 404;
a form without its CSRF token is refused. Each page's screenshot is saved in tests/screenshots/."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import aiohttp.web
import pytest
import pytest_asyncio
from playwright.async_api import async_playwright
from yarl import URL

from devstack.infra import free_port
from tests import chromium
from tests.conftest import Api, Receiver, Relay, deliver, eventually, new_org
from tests.integration.test_send import make_identity

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

SCREENSHOTS = Path(__file__).resolve().parents[1] / "screenshots"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator:
    if not chromium.binary():
        pytest.skip(chromium.MISSING)  # only where it cannot be installed: `make test` installs it
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=chromium.binary(), args=chromium.ARGS)
        yield b
        await b.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser, api: Api) -> AsyncIterator:
    context = await browser.new_context(base_url=api.base, viewport={"width": 1280, "height": 860})
    p = await context.new_page()
    p.requested = []  # every URL the page or any of its frames asked for
    p.on("request", lambda r: p.requested.append(r.url))
    yield p
    await context.close()


async def log_in(page, key: str) -> None:
    await page.goto("/ui/")
    assert page.url.endswith("/ui/login")
    await page.fill("input[name=api_key]", key)
    await page.click("button:has-text('Log in')")
    await page.wait_for_url("**/ui/conversations")


async def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


async def send(api: Api, handle: str, **body) -> dict:
    status, answer, _ = await api.call("POST", f"/v1/identities/{handle}/send", body)
    assert status == 202, answer
    return answer["messages"][0]


async def test_a_person_reads_a_conversation_approves_a_draft_and_cancels_a_scheduled_send(
    api: Api, relay: Relay, receiver: Receiver, page
) -> None:
    handle, [mailbox] = await make_identity(api, relay)
    status, _, _ = await api.call("POST", "/v1/webhooks", {"url": receiver.url("/hooks"), "events": ["message.sent"]})
    assert status == 201
    sent = await send(api, handle, to="morgan@example.test", subject="Quick intro", text="Hi Morgan", html="<p>Hi <b>Morgan</b></p>")
    await relay.wait_for(1)

    await log_in(page, api.key)
    cookie = next(c for c in await page.context.cookies() if c["name"] == "sendstream_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui", cookie
    await page.wait_for_selector("text=Quick intro")
    await shot(page, "conversations")

    await page.click("text=Quick intro")
    await page.wait_for_url(f"**/ui/conversations/{sent['convId']}")
    frame = page.frame_locator("iframe.body")
    await frame.locator("b:has-text('Morgan')").wait_for()  # the HTML body, in its frame
    await shot(page, "conversation")

    # A person replies in the thread; the same form sent twice (a double click) sends once.
    await page.fill("textarea[name=text]", "Following up by hand.")
    posted = {n: await page.input_value(f"input[name={n}]") for n in ("csrf_token", "idempotency_key")}
    await page.click("button:has-text('Send reply')")
    await page.wait_for_selector("text=Reply sent.")
    again = await page.request.post(
        f"/ui/conversations/{sent['convId']}/reply", form={**posted, "text": "Following up by hand."}, max_redirects=0
    )
    assert again.status == 303
    [_, by_hand] = await relay.wait_for(2)
    assert by_hand.message["In-Reply-To"] == sent["id"] and by_hand.rcpt_tos == ["morgan@example.test"]
    assert "Following up by hand." in by_hand.message.get_body(("plain",)).get_content()
    await page.locator("article.message.outbound pre.body", has_text="Following up by hand.").wait_for()

    await page.click("text=Timeline, files and raw source")
    sent_id = page.url.rsplit("/", 1)[1]
    for event in ("SendRequested", "SendAccepted", "MessageSent"):
        await page.locator("ol.timeline summary", has_text=event).first.wait_for()
    raw = await page.get_attribute("a:has-text('message.eml')", "href")
    async with page.expect_download() as download:
        await page.click("a:has-text('message.eml')")
    assert b"Subject: Quick intro" in Path(await (await download.value).path()).read_bytes(), raw
    await receiver.wait_for("/hooks", 1)
    await page.reload()
    await shot(page, "message")
    await page.click("table >> button:has-text('Retry')")  # its message.sent delivery, sent again
    await page.wait_for_selector("text=Delivery queued again")
    assert page.url.split("?")[0].endswith(f"/ui/messages/{sent_id}")
    await receiver.wait_for("/hooks", 2)

    # A draft, approved by clicking: the mail reaches the relay.
    status, _, _ = await api.call("PATCH", f"/v1/identities/{handle}", {"requireApproval": True})
    assert status == 200
    held = await send(api, handle, to="lee@example.test", subject="Needs a look", text="Draft body")
    assert held["status"] == "pending_approval", held
    await page.click("nav >> text=Drafts")
    draft = page.locator(f"article#{held['draftId']}")
    await draft.locator("text=Needs a look").wait_for()
    await shot(page, "drafts")
    await draft.locator("button:has-text('Approve and send')").click()
    await page.wait_for_selector("text=Draft approved")
    got = await relay.wait_for(3)
    assert got[2].message["Subject"] == "Needs a look" and got[2].rcpt_tos == ["lee@example.test"]
    status, shown, _ = await api.call("GET", f"/v1/drafts/{held['draftId']}")
    assert shown["status"] == "approved", shown

    # A scheduled send, cancelled by clicking: it never fires.
    status, _, _ = await api.call("PATCH", f"/v1/identities/{handle}", {"requireApproval": False})
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    waiting = await send(api, handle, to="pat@example.test", subject="Follow-up", text="Later", sendAt=later)
    await page.click("nav >> text=Scheduled")
    row = page.locator(f"tr[id='{waiting['messageId']}']")
    await row.wait_for()
    await shot(page, "scheduled")
    await row.locator("button:has-text('Cancel')").click()
    await page.wait_for_selector("text=Scheduled send cancelled")
    assert await row.count() == 0
    status, listed, _ = await api.call("GET", "/v1/scheduled")
    assert listed["data"] == [], listed
    status, trail, _ = await api.call("GET", f"/v1/messages/{waiting['messageId']}/events")
    assert "SendCancelled" in [e["type"] for e in trail["data"]], trail

    # A draft edited, another rejected: only what was approved ever went out.
    status, _, _ = await api.call("PATCH", f"/v1/identities/{handle}", {"requireApproval": True})
    edited = await send(api, handle, to="kim@example.test", subject="First try", text="v1")
    rejected = await send(api, handle, to="max@example.test", subject="Not this one", text="no")
    await page.click("nav >> text=Drafts")
    await page.locator(f"article#{edited['draftId']} >> text=Edit").click()
    await shot(page, "draft")
    await page.fill("input[name=subject]", "Second try")
    await page.click("button:has-text('Save')")
    await page.wait_for_selector("text=Draft saved")
    status, shown, _ = await api.call("GET", f"/v1/drafts/{edited['draftId']}")
    assert shown["subject"] == "Second try" and shown["status"] == "pending", shown
    await page.click("nav >> text=Drafts")
    card = page.locator(f"article#{rejected['draftId']}")
    await card.locator("input[name=reason]").fill("Wrong person")
    await card.locator("button:has-text('Reject')").click()
    await page.wait_for_selector("text=Draft rejected")
    status, shown, _ = await api.call("GET", f"/v1/drafts/{rejected['draftId']}")
    assert (shown["status"], shown["reason"]) == ("rejected", "Wrong person"), shown

    # An address suppressed, then removed again.
    await page.click("nav >> text=Suppressions")
    await page.fill("input[name=address]", "Nobody@Example.test")
    await page.click("button:has-text('Suppress')")
    await page.wait_for_selector("text=Address added to the suppression list")
    status, _, _ = await api.call("GET", "/v1/suppressions/nobody@example.test")
    assert status == 200
    await page.locator("tr", has_text="nobody@example.test").locator("button:has-text('Remove')").click()
    await page.wait_for_selector("text=Address removed from the suppression list")
    status, _, _ = await api.call("GET", "/v1/suppressions/nobody@example.test")
    assert status == 404
    assert len(relay.received) == 3  # the first send, the reply by hand and the approved draft

    for name in ("identities", "suppressions", "webhooks"):
        await page.click(f"nav >> text={name.capitalize()}")
        await page.wait_for_url(f"**/ui/{name}")
        await shot(page, name)
        if name == "identities":  # its mailbox, with its health and limits
            row = page.locator("tr", has_text=mailbox["email"])
            assert "healthy" in await row.inner_text()
    await page.click(f"text={receiver.url('/hooks')}")  # an endpoint's deliveries
    await page.locator("td", has_text="message.sent").first.wait_for()
    await shot(page, "webhook")


HOSTILE = """<html><head>
<meta http-equiv="refresh" content="0;url={base}/refresh">
<style>body {{ background: url({base}/style.png) }} @import url({base}/import.css);</style>
<script>window.pwned = "script"</script>
</head><body>
<p>Quarterly numbers attached.</p>
<img src="x" onerror="window.pwned = 'onerror'">
<a id="js" href="javascript:window.pwned = 'link'">open</a>
<div style="background-image: url({base}/inline.png)">styled</div>
<img id="tracker" src="{base}/remote.png" alt="tracker">
<svg onload="window.pwned = 'svg'"></svg>
<iframe src="{base}/frame.html"></iframe>
<form action="{base}/form"><input name="q"><button>go</button></form>
</body></html>"""


async def test_hostile_mail_runs_nothing_and_loads_nothing_until_images_are_asked_for(
    api: Api, relay: Relay, receiver: Receiver, inbound: int, page
) -> None:
    handle, [mailbox] = await make_identity(api, relay)
    base = receiver.url("")
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "stranger@example.test", mailbox["email"], "Hostile numbers"
    mail.set_content("Quarterly numbers attached.")
    mail.add_alternative(HOSTILE.format(base=base), subtype="html")
    mail.add_attachment(b"<script>window.pwned='attachment'</script>", maintype="text", subtype="html", filename="report.html")
    await deliver(inbound, mail, "stranger@example.test", [mailbox["email"]])

    async def arrived():
        _, found, _ = await api.call("GET", f"/v1/identities/{handle}/conversations")
        return found["data"] and found["data"][0]

    conv = await eventually(arrived)
    [msg] = conv["messages"]
    await log_in(page, api.key)
    await page.goto(f"/ui/messages/{msg['messageId']}")
    frame = page.frame_locator("iframe.body")
    await frame.locator("text=Quarterly numbers attached.").wait_for()
    await frame.locator("a:has-text('open')").click()  # a javascript: link has lost its href: nothing happens
    await page.wait_for_timeout(500)
    await shot(page, "hostile-message")

    body_frame = next(f for f in page.frames if "/body" in f.url)
    assert await page.evaluate("typeof window.pwned") == "undefined"
    assert await body_frame.evaluate("typeof window.pwned") == "undefined"
    assert not [u for u in page.requested if u.startswith(base)], page.requested
    assert receiver.got == [] and page.url.endswith(f"/ui/messages/{msg['messageId']}")
    assert await page.locator("text=1 remote image blocked").count() == 1

    # Files are downloaded, never shown: the HTML attachment is a download, not a page.
    async with page.expect_download() as download:
        await page.click("a:has-text('report.html')")
    assert (await download.value).suggested_filename == "report.html"

    # Asked for, the remote image loads, and still nothing runs.
    await page.click("#show-images")
    await receiver.wait_for("/remote.png", 1)
    await frame.locator("img[alt=tracker]").wait_for()
    assert await page.evaluate("typeof window.pwned") == "undefined"
    assert {h.path for h in receiver.got} <= {"/remote.png", "/inline.png", "/style.png"}, [h.path for h in receiver.got]


async def test_another_organizations_pages_are_404_and_a_form_without_its_token_is_refused(
    api: Api, operator: Api, relay: Relay, page
) -> None:
    other = await new_org(operator)
    other_handle, _ = await make_identity(other, relay)
    theirs = await send(other, other_handle, to="x@example.test", subject="Not yours", text="secret")
    _, conv, _ = await other.call("GET", f"/v1/conversations/{theirs['convId']}")
    handle, _ = await make_identity(api, relay)
    await api.call("PATCH", f"/v1/identities/{handle}", {"requireApproval": True})
    held = await send(api, handle, to="y@example.test", subject="Pending", text="t")

    await log_in(page, api.key)
    for path in (f"/ui/conversations/{theirs['convId']}", f"/ui/messages/{conv['messages'][0]['messageId']}"):
        response = await page.goto(path)
        assert response.status == 404, path
        assert await page.locator("text=Not yours").count() == 0
    await shot(page, "not-found")

    # The session's own cookie, but no CSRF token: refused, and the draft is still pending.
    refused = await page.request.post(f"/ui/drafts/{held['draftId']}/approve", form={}, max_redirects=0)
    assert refused.status == 403, await refused.text()
    forged = await page.request.post(
        f"/ui/drafts/{held['draftId']}/approve", form={"csrf_token": "20991231235959##" + "0" * 40}, max_redirects=0
    )
    assert forged.status == 403
    _, shown, _ = await api.call("GET", f"/v1/drafts/{held['draftId']}")
    assert shown["status"] == "pending", shown

    # The policy: no inline script, nothing from elsewhere; the page is never framed.
    response = await page.goto("/ui/drafts")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy

    # Logging out ends the session: its cookie opens nothing any more.
    cookies = await page.context.cookies()
    await page.click("button:has-text('Log out')")
    await page.wait_for_url("**/ui/login?notice=out")
    await page.context.add_cookies(cookies)
    await page.goto("/ui/drafts")
    assert page.url.endswith("/ui/login")


async def test_new_mail_appears_without_a_reload_in_every_tab_through_one_stream(
    api: Api, relay: Relay, inbound: int, page
) -> None:
    handle, [mailbox] = await make_identity(api, relay)
    await log_in(page, api.key)
    await page.goto("/ui/identities")  # a page without live updates: the landing page's stream is closed
    tabs = [page, await page.context.new_page()]
    streams = []
    for tab in tabs:
        tab.on("request", lambda r: streams.append(r.url) if r.url.endswith("/ui/live") else None)
        await tab.goto(f"/ui/conversations?identity={handle}")
        await tab.wait_for_function("() => document.documentElement.dataset.live === 'on'")  # the stream is open
        await tab.evaluate("window.stayed = true")  # gone if the page reloads

    subject = f"Arrived live {uuid.uuid4().hex[:6]}"
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "ana@example.test", mailbox["email"], subject
    mail.set_content("Hello there")
    await deliver(inbound, mail, "ana@example.test", [mailbox["email"]])

    for tab in tabs:
        await tab.locator("table.list a", has_text=subject).wait_for(timeout=15_000)
        assert await tab.evaluate("window.stayed") is True
    assert len(streams) == 1, streams  # the second tab heard it from the first


async def test_a_revoked_key_ends_its_sessions(api: Api, page) -> None:
    _, made, _ = await api.call("POST", "/v1/api-keys", {"scopes": ["read"]})
    await log_in(page, made["apiKey"])
    status, _, _ = await api.call("DELETE", f"/v1/api-keys/{made['id']}")
    assert status in (200, 204)
    await page.goto("/ui/conversations")
    assert page.url.endswith("/ui/login")
    await page.fill("input[name=api_key]", made["apiKey"])
    await page.click("button:has-text('Log in')")
    await page.locator("text=no valid API key").wait_for()


async def test_the_login_form_needs_its_token_and_a_key(api: Api, page) -> None:
    await page.goto("/ui/login")
    refused = await page.request.post("/ui/login", form={"api_key": api.key}, max_redirects=0)
    assert refused.status == 403
    await page.fill("input[name=api_key]", "sk_live_" + "x" * 43)
    await page.click("button:has-text('Log in')")
    await page.locator("text=api_key: this is no valid API key").wait_for()
    assert re.search(r"/ui/login$", page.url)
    await shot(page, "login")


async def test_an_approval_is_of_the_version_the_person_saw(api: Api, relay: Relay, page) -> None:
    handle, _ = await make_identity(api, relay)
    await api.call("PATCH", f"/v1/identities/{handle}", {"requireApproval": True})
    held = await send(api, handle, to="lee@example.test", subject="Pricing", text="Our price is 100.", html="<p>Our price is <b>100</b>.</p>")
    await log_in(page, api.key)
    await page.goto("/ui/drafts")
    card = page.locator(f"article#{held['draftId']}")
    await card.locator("summary:has-text('Its HTML')").click()  # the HTML as it will be seen, framed
    await page.frame_locator(f"article#{held['draftId']} iframe").locator("b:has-text('100')").wait_for()

    # The agent changes the draft after the person opened the page: that version is not approved unseen.
    status, _, _ = await api.call("PATCH", f"/v1/drafts/{held['draftId']}", {"text": "Our price is 900."})
    assert status == 200
    await card.locator("button:has-text('Approve and send')").click()
    await page.wait_for_selector("text=Not approved: the draft was edited after you opened it")
    _, shown, _ = await api.call("GET", f"/v1/drafts/{held['draftId']}")
    assert shown["status"] == "pending" and relay.received == [], shown
    await page.locator(f"article#{held['draftId']} >> text=Our price is 900.").wait_for()
    await page.locator(f"article#{held['draftId']} button:has-text('Approve and send')").click()
    await page.wait_for_selector("text=Draft approved")
    [got] = await relay.wait_for(1)
    assert "Our price is 900." in got.message.get_body(("plain",)).get_content()

    # A message a draft holds has a page too (its timeline is empty until it is approved).
    held = await send(api, handle, to="kim@example.test", subject="Held", text="t")
    await eventually(lambda: shown_by_api(api, held["messageId"]))
    response = await page.goto(f"/ui/messages/{held['messageId']}")
    assert response.status == 200 and await page.locator("code", has_text=held["messageId"]).count() == 1
    # Never another API route by a dot segment (a browser resolves them; a script need not).
    cookie = next(c["value"] for c in await page.context.cookies() if c["name"] == "sendstream_session")
    async with aiohttp.ClientSession(cookies={"sendstream_session": cookie}) as raw:
        for odd in ("%2E", "%2E%2E"):
            async with raw.get(URL(f"{api.base}/ui/drafts/{odd}", encoded=True), allow_redirects=False) as r:
                assert r.status == 404 and "Not found" in await r.text()


async def test_another_port_of_the_same_host_cannot_log_a_person_in_or_post_their_forms(
    api: Api, operator: Api, page
) -> None:
    """SameSite lets a page on another port of this host send the cookies (it is the same site) and
    set them: the login seed planted, the form posted with its matching token, is still refused."""
    other = await new_org(operator)
    mine, theirs = f"mine-{uuid.uuid4().hex[:6]}@example.test", f"theirs-{uuid.uuid4().hex[:6]}@example.test"
    for who, handle in ((api, mine), (other, theirs)):
        status, _, _ = await who.call("POST", "/v1/identities", {"handle": handle, "dailyCap": 10})
        assert status == 201
    await log_in(page, api.key)
    seed_page = await page.context.new_page()
    await seed_page.goto("/ui/login")  # the attacker gets a seed and its token, as anyone can
    token = await seed_page.input_value("input[name=csrf_token]")
    seed = next(c["value"] for c in await page.context.cookies() if c["name"] == "sendstream_login")
    await seed_page.close()

    async def attacker(_: aiohttp.web.Request) -> aiohttp.web.Response:
        page_text = ATTACK.format(base=api.base, seed=seed, token=token, key=other.key)
        return aiohttp.web.Response(content_type="text/html", text=page_text)

    attack = aiohttp.web.Application()
    attack.router.add_get("/", attacker)
    runner = aiohttp.web.AppRunner(attack)
    await runner.setup()
    port = free_port()
    await aiohttp.web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await page.goto(f"http://127.0.0.1:{port}/")
        await page.wait_for_load_state()
        await page.wait_for_timeout(500)
    finally:
        await runner.cleanup()
    await page.goto("/ui/identities")  # still logged in, to the person's own organization
    assert page.url.endswith("/ui/identities")
    await page.locator("h2", has_text=mine).wait_for()
    assert await page.locator("h2", has_text=theirs).count() == 0


async def shown_by_api(api: Api, message_id: str) -> bool:
    status, _, _ = await api.call("GET", f"/v1/messages/{message_id}")
    return status == 200


ATTACK = """<!doctype html><form method="post" action="{base}/ui/login">
<input name="api_key" value="{key}"><input name="csrf_token" value="{token}"></form>
<script>document.cookie = "sendstream_login={seed}; path=/ui"; document.forms[0].submit();</script>"""


async def test_mail_nested_too_deep_to_clean_quickly_is_shown_as_its_text(
    api: Api, relay: Relay, inbound: int, page
) -> None:
    handle, [mailbox] = await make_identity(api, relay)
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "deep@example.test", mailbox["email"], "Deep"
    mail.set_content("The plain words.")
    mail.add_alternative("<div>" * 100_000 + "deep" + "</div>" * 100_000, subtype="html")
    await deliver(inbound, mail, "deep@example.test", [mailbox["email"]])

    async def arrived():
        _, found, _ = await api.call("GET", f"/v1/identities/{handle}/conversations")
        return found["data"] and found["data"][0]["messages"][0]

    msg = await eventually(arrived)
    await log_in(page, api.key)
    await page.goto(f"/ui/messages/{msg['messageId']}")
    await page.locator("text=too complex to show safely").first.wait_for()
    await page.frame_locator("iframe.body").locator("text=The plain words.").wait_for()
