"""The organization's event feed: pages, the Server-Sent Events stream, and the long poll for a reply."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import make_msgid

import aiohttp
import pytest

from tests.conftest import Api, Relay, deliver, eventually, new_org

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def suppress(api: Api, count: int, tag: str) -> list[str]:
    """`count` SuppressionAdded events, in order (one partition: the suppressions topic is keyed by org)."""
    addresses = [f"{tag}-{i}-{uuid.uuid4().hex[:4]}@example.test" for i in range(count)]
    for address in addresses:
        status, body, _ = await api.call("POST", "/v1/suppressions", {"address": address})
        assert status == 201, body
    return addresses


def address_of(item: dict) -> str:
    return item["event"]["payload"]["address"]


async def test_pages_lose_and_repeat_nothing_while_events_arrive_and_stay_in_their_organization(
    api: Api, operator: Api
) -> None:
    expected = await suppress(api, 5, "first")
    seen: list[dict] = []
    after = "0"
    for round_ in range(3):  # three pages, more events arriving between them
        status, page, _ = await api.call("GET", f"/v1/events?after={after}&limit=4&types=SuppressionAdded")
        assert status == 200, page
        seen += page["data"]
        after = page["nextCursor"]
        expected += await suppress(api, 2, f"between-{round_}")

    async def rest() -> bool:
        nonlocal after
        _, more, _ = await api.call("GET", f"/v1/events?after={after}&limit=100&types=SuppressionAdded")
        seen.extend(more["data"])
        after = more["nextCursor"]
        return len(seen) >= len(expected)

    await eventually(rest, timeout=20)
    assert [address_of(e) for e in seen] == expected  # every one, once, in the order they happened
    cursors = [int(e["cursor"]) for e in seen]
    assert cursors == sorted(set(cursors))

    other = await new_org(operator)
    [own] = await suppress(other, 1, "other")

    async def theirs() -> list[dict] | None:
        _, body, _ = await other.call("GET", "/v1/events?limit=100")
        return body["data"] if any(address_of(e) == own for e in body["data"]) else None

    events = await eventually(theirs)
    assert [address_of(e) for e in events if e["type"] == "SuppressionAdded"] == [own]
    assert len({e["event"]["org_id"] for e in events}) == 1
    assert events[0]["event"]["org_id"] != seen[0]["event"]["org_id"]
    assert (await api.call("GET", "/v1/events?after=nope"))[0] == 400


async def read_events(response: aiohttp.ClientResponse, count: int, timeout: float = 15) -> list[dict]:
    """The next `count` events of a Server-Sent Events stream (comments and `retry:` passed over)."""
    events, fields = [], {}
    deadline = time.monotonic() + timeout
    while len(events) < count:
        line = await asyncio.wait_for(response.content.readline(), max(deadline - time.monotonic(), 0.01))
        text = line.decode().rstrip("\n")
        if text == "":
            if "data" in fields:
                events.append(fields)
            fields = {}
        elif not text.startswith(":"):
            name, _, value = text.partition(": ")
            fields[name] = value
    return events


async def test_the_stream_pushes_events_and_resumes_after_last_event_id_with_no_gap(api: Api) -> None:
    headers = {"Authorization": f"Bearer {api.key}"}
    url = f"{api.base}/v1/events/stream?types=SuppressionAdded"
    async with api.session.get(url, headers=headers) as live:
        assert live.status == 200 and live.headers["Content-Type"].startswith("text/event-stream")
        first = await suppress(api, 3, "live")
        got = await read_events(live, 3)
    assert [json.loads(e["data"])["event"]["payload"]["address"] for e in got] == first
    assert {e["event"] for e in got} == {"SuppressionAdded"}

    missed = await suppress(api, 3, "while-away")  # disconnected meanwhile
    async with api.session.get(url, headers={**headers, "Last-Event-ID": got[-1]["id"]}) as again:
        resumed = await read_events(again, 3)
    assert [json.loads(e["data"])["event"]["payload"]["address"] for e in resumed] == missed
    assert int(resumed[0]["id"]) > int(got[-1]["id"])


async def test_the_long_poll_returns_soon_after_a_message_arrives_and_times_out_cleanly(
    api: Api, relay: Relay, inbound: int
) -> None:
    email = f"waits-{uuid.uuid4().hex[:6]}@agents.example.test"
    _, inbox, _ = await api.call("POST", "/v1/inboxes", {"email": email, "smtp": relay.smtp_settings()})

    started = time.monotonic()
    status, empty, _ = await api.call("GET", f"/v1/messages/wait?inbox={inbox['id']}&timeout=1")
    assert status == 200 and empty["message"] is None, empty
    assert 0.9 < time.monotonic() - started < 5

    waiting = asyncio.create_task(
        api.call("GET", f"/v1/messages/wait?inbox={email}&after={empty['cursor']}&timeout=30")
    )
    await asyncio.sleep(0.5)
    code = EmailMessage()
    code["From"], code["To"], code["Subject"] = "noreply@service.example.test", email, "Your code: 314159"
    code["Message-ID"] = make_msgid(domain="service.example.test")
    code.set_content("314159")
    await deliver(inbound, code, "noreply@service.example.test", [email])
    delivered = time.monotonic()
    status, got, _ = await waiting
    answered, answered_at = time.monotonic(), datetime.now(UTC)
    assert status == 200 and got["message"]["type"] == "MessageReceived", got
    received_at = datetime.fromisoformat(got["message"]["occurredAt"].replace("Z", "+00:00"))
    assert (answered_at - received_at).total_seconds() < 1.0  # from the message received to the answer
    assert got["message"]["event"]["payload"]["message"]["content"]["subject"] == "Your code: 314159"
    assert answered - delivered < 5  # the message's path through inbound and decide, then at once
    # the next wait, from the cursor it returned, does not see the same message again
    status, after, _ = await api.call(
        "GET", f"/v1/messages/wait?inbox={inbox['id']}&after={got['cursor']}&timeout=1"
    )
    assert status == 200 and after["message"] is None and after["cursor"] == got["cursor"]
    assert (await api.call("GET", "/v1/messages/wait?inbox=nobody@nowhere.test&timeout=1"))[0] == 404
    assert (await api.call("GET", f"/v1/messages/wait?inbox={email}&timeout=99"))[0] == 400


async def test_a_stream_and_a_long_poll_end_within_a_second_of_their_keys_revocation(
    api: Api, relay: Relay
) -> None:
    """Finding 9: revoking a key ends the streams and long polls it opened (an `error` event, a 401),
    and events after the revocation never reach them."""
    _, minted, _ = await api.call("POST", "/v1/api-keys", {"scopes": ["read"]})
    reader = api.as_key(minted["apiKey"])
    email = f"revoked-{uuid.uuid4().hex[:6]}@agents.example.test"
    _, inbox, _ = await api.call("POST", "/v1/inboxes", {"email": email, "smtp": relay.smtp_settings()})
    headers = {"Authorization": f"Bearer {reader.key}"}
    async with api.session.get(f"{api.base}/v1/events/stream?types=SuppressionAdded", headers=headers) as live:
        assert live.status == 200
        before = await suppress(api, 1, "before-revocation")
        [seen] = await read_events(live, 1)
        assert json.loads(seen["data"])["event"]["payload"]["address"] == before[0]
        polling = asyncio.create_task(reader.call("GET", f"/v1/messages/wait?inbox={inbox['id']}&timeout=30"))
        await asyncio.sleep(0.3)
        assert (await api.call("DELETE", f"/v1/api-keys/{minted['id']}"))[0] == 204
        revoked_at = time.monotonic()
        after = await suppress(api, 1, "after-revocation")
        [ended] = await read_events(live, 1, timeout=5)
        assert ended["event"] == "error" and json.loads(ended["data"])["type"] == "unauthorized", (ended, after)
        assert time.monotonic() - revoked_at < 2.5
        assert await asyncio.wait_for(live.content.read(), 5) == b""  # the server closed the stream
        status, body, _ = await asyncio.wait_for(polling, 5)
        assert status == 401 and "revoked" in body["error"]["message"], body
        assert time.monotonic() - revoked_at < 2.5
    status, _, _ = await reader.call("GET", "/v1/events/stream")
    assert status == 401
