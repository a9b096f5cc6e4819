"""Stop on reply (SPEC 3.5), against the real stack: a follow-up scheduled with `unlessReplied` into a
conversation never goes out when the counterpart's reply reaches the conversation a second before it
fires, whether the reply comes through our inbound SMTP server or is fetched from the mailbox by mail
sync; an out-of-office arriving first does not stop it.

Twenty conversations run at once, their follow-ups due a fifth of a second apart, each reply handed
over one second before its follow-up's time (and shown to have been taken by then). Nothing is left
to a pause: every follow-up's firing is seen decided, and the relay is read up to a marker sent after.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest
from standardwebhooks import Webhook

from schemas import ids
from schemas.events import firing_id
from tests.conftest import Api, Receiver, Relay, deliver, eventually, through
from tests.dovecot import Dovecot
from tests.integration.test_inbound import reply_to
from tests.integration.test_mailsync import PASSWORD, dovecot, synced_identity  # noqa: F401 (a fixture)
from tests.integration.test_send import make_identity

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

REPLIES = 20
FIRST_FIRE_S = 4.0  # ahead of now: time to schedule every follow-up, and a second for the first reply
APART_S = 0.2


async def race_replies_against_follow_ups(
    api: Api, relay: Relay, db, handle: str, address: str, hand_over: Callable[[EmailMessage], Awaitable[None]]
) -> None:
    """REPLIES conversations whose counterpart replies, and one whose counterpart's out-of-office
    answers, each a second before its follow-up fires: only the one after the out-of-office goes out."""
    tag = uuid.uuid4().hex[:6]
    people = [f"p{i}-{tag}@example.test" for i in range(REPLIES)]
    away = f"away-{tag}@example.test"
    status, body, _ = await api.call(
        "POST", f"/v1/identities/{handle}/send", {"to": [*people, away], "subject": f"Intro {tag}", "text": "Hello"}
    )  # fmt: skip
    assert status == 202 and body["accepted"] == REPLIES + 1, body
    conv_of = {m["to"]: m["convId"] for m in body["messages"]}
    await relay.wait_for(REPLIES + 1)
    intro_of = {r.rcpt_tos[0]: r.message for r in relay.received if f"Intro {tag}" in str(r.message["Subject"])}

    base = datetime.now(UTC) + timedelta(seconds=FIRST_FIRE_S)
    fire_at = {p: base + timedelta(seconds=i * APART_S) for i, p in enumerate([*people, away])}
    follow_ups = {}
    for person, at in fire_at.items():
        status, body, _ = await api.call(
            "POST", f"/v1/identities/{handle}/send",
            {"convId": conv_of[person], "text": f"Following up {tag}", "sendAt": at.isoformat(), "unlessReplied": True},
        )  # fmt: skip
        assert status == 202 and body["scheduled"] == 1, body
        follow_ups[person] = body["messages"][0]["messageId"]
    assert datetime.now(UTC) < base - timedelta(seconds=1), "scheduling took too long to leave a second"

    async def answer(person: str) -> float:
        """Hand the reply over a second before the follow-up fires; how long before it, once taken."""
        await asyncio.sleep((fire_at[person] - timedelta(seconds=1) - datetime.now(UTC)).total_seconds())
        reply = reply_to(intro_of[person], person, address, "Thanks, not now.")
        if person == away:
            del reply["Subject"]
            reply["Subject"] = f"Automatic reply: Intro {tag}"
            reply["Auto-Submitted"] = "auto-replied"
        await hand_over(reply)
        return (fire_at[person] - datetime.now(UTC)).total_seconds()

    ahead = await asyncio.gather(*(answer(p) for p in fire_at))
    assert min(ahead) > 0.3, f"a reply was handed over only {min(ahead):.2f}s before its follow-up's time"

    # Every follow-up's timer fired and was decided (cancelled ones decide to nothing) ...
    fired = [firing_id(ids.parse("message", m), fire_at[p]) for p, m in follow_ups.items()]
    decided = "SELECT count(*) FROM processed_events WHERE consumer = 'decide' AND event_id = ANY($1::uuid[])"
    assert await eventually(lambda: _at_least(db.fetchval(decided, fired), len(fired)), timeout=30)
    # ... and the relay has everything the identity sent before the marker.
    got = await relay.before_marker(through(api, handle))
    sent = [r.rcpt_tos for r in got if f"Following up {tag}" in r.message.get_body(("plain",)).get_content()]
    assert sent == [[away]], f"{len(sent)} follow-ups sent: {sent}"

    async def status(person: str) -> list[str]:
        _, conv, _ = await api.call("GET", f"/v1/conversations/{conv_of[person]}")
        return [m["status"] for m in conv["messages"] if m.get("messageId") == follow_ups[person]]

    for person in people:
        assert await eventually(lambda p=person: _is(status(p), ["cancelled"]), timeout=10), person


async def test_a_reply_through_our_smtp_server_a_second_before_the_fire_stops_the_follow_up_20_times(
    api: Api, relay: Relay, inbound: int, db, receiver: Receiver
) -> None:
    status, hook, _ = await api.call(
        "POST", "/v1/webhooks", {"url": receiver.url("/cancelled"), "events": ["message.cancelled"]}
    )
    assert status == 201, hook
    handle, [mailbox] = await make_identity(api, relay)

    async def hand_over(reply: EmailMessage) -> None:
        await deliver(inbound, reply, str(reply["From"].addresses[0].addr_spec), [mailbox["email"]])

    await race_replies_against_follow_ups(api, relay, db, handle, mailbox["email"], hand_over)
    # Each stopped follow-up is told of as `message.cancelled`, reason `replied`.
    told = [Webhook(hook["secret"]).verify(r.body, r.headers) for r in await receiver.wait_for("/cancelled", REPLIES)]
    assert {(t["type"], t["data"]["status"], t["data"]["reason"]) for t in told} == {
        ("message.cancelled", "cancelled", "replied")
    }, told[0]


async def test_a_reply_fetched_by_mail_sync_a_second_before_the_fire_stops_the_follow_up_20_times(
    api: Api, relay: Relay, dovecot: Dovecot, db  # noqa: F811 (the fixture)
) -> None:
    handle, [mailbox] = await synced_identity(api, relay, dovecot)

    async def hand_over(reply: EmailMessage) -> None:
        await dovecot.append(mailbox["email"], PASSWORD, [bytes(reply)])

    await race_replies_against_follow_ups(api, relay, db, handle, mailbox["email"], hand_over)


async def _at_least(value: Awaitable[int], n: int) -> bool:
    return await value >= n


async def _is(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


