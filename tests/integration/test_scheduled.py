"""Scheduled sends (SPEC 3.5), against the real stack: a send for later reaches the relay at its time,
not before; a cancel before the fire keeps it from ever going out; a cancel after it is 409."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from devstack.local import Stack
from schemas import ids
from schemas.events import firing_id
from services.common import timers
from tests.conftest import Api, Relay, eventually, new_org, through
from tests.integration.test_crash import identity_for
from tests.integration.test_mailboxes import new_mailbox
from tests.integration.test_restart import local_stack
from tests.integration.test_send import make_identity

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def schedule(api: Api, handle: str, to: str, ahead_s: float) -> tuple[dict, datetime]:
    at = (datetime.now(UTC) + timedelta(seconds=ahead_s)).replace(microsecond=0) + timedelta(seconds=1)
    status, body, _ = await api.call(
        "POST", f"/v1/identities/{handle}/send",
        {"to": to, "subject": f"Later {uuid.uuid4().hex[:6]}", "text": "t", "sendAt": at.isoformat()},
    )  # fmt: skip
    assert status == 202, body
    assert (body["accepted"], body["rejected"], body["scheduled"]) == (0, 0, 1), body
    [m] = body["messages"]
    assert m["status"] == "scheduled" and datetime.fromisoformat(m["sendAt"]) == at, m
    return m, at


async def status_of(api: Api, message: dict) -> str | None:
    code, conv, _ = await api.call("GET", f"/v1/conversations/{message['convId']}")
    return conv["messages"][0]["status"] if code == 200 and conv["messages"] else None


async def test_a_send_scheduled_three_seconds_ahead_reaches_the_relay_at_its_time(api: Api, relay: Relay) -> None:
    handle, _ = await make_identity(api, relay)
    message, at = await schedule(api, handle, "later@example.test", 3)
    assert await eventually(lambda: _is(status_of(api, message), "scheduled"), timeout=10)
    [got] = await relay.wait_for(1, timeout=20)
    arrived = datetime.now(UTC)
    assert at <= arrived <= at + timedelta(seconds=2), (at, arrived)
    assert got.rcpt_tos == ["later@example.test"]
    assert await eventually(lambda: _is(status_of(api, message), "sent"), timeout=10)
    status, body, _ = await api.call("POST", f"/v1/messages/{message['messageId']}/cancel")
    assert status == 409 and "already_sent" in body["error"]["message"], body


async def test_a_send_cancelled_before_its_time_never_goes_out(api: Api, relay: Relay, db) -> None:
    handle, _ = await make_identity(api, relay)
    message, at = await schedule(api, handle, "never@example.test", 2)
    for _ in range(2):  # repeating it is harmless
        status, body, _ = await api.call("POST", f"/v1/messages/{message['messageId']}/cancel")
        assert status == 200 and body["status"] == "cancelled", body
    assert await eventually(lambda: _is(status_of(api, message), "cancelled"), timeout=10)
    # Its timer still fires; decide drops it, the cancel having come first on the identity's partition.
    fire = firing_id(ids.parse("message", message["messageId"]), at)
    decided = "SELECT true FROM processed_events WHERE consumer = 'decide' AND event_id = $1"
    await eventually(lambda: db.fetchval(decided, fire), timeout=20)
    assert relay.received == [] and datetime.now(UTC) > at
    assert await status_of(api, message) == "cancelled"


async def test_what_waits_is_listed_soonest_first_and_a_cancelled_one_leaves_the_list(api: Api, relay: Relay) -> None:
    handle, _ = await make_identity(api, relay)
    later, _ = await schedule(api, handle, "second@example.test", 120)
    sooner, _ = await schedule(api, handle, "first@example.test", 60)

    async def listed(**query: str) -> list[dict]:
        q = "&".join(f"{k}={v}" for k, v in {"identity": handle, **query}.items())
        status, body, _ = await api.call("GET", f"/v1/scheduled?{q}")
        assert status == 200, body
        return body["data"] if not query else [*body["data"], {"next": body["nextCursor"]}]

    assert [m["messageId"] for m in await listed()] == [sooner["messageId"], later["messageId"]]
    first_page = await listed(limit="1")
    assert first_page[0]["to"] == ["first@example.test"] and first_page[1]["next"]
    assert (await api.call("POST", f"/v1/messages/{sooner['messageId']}/cancel"))[0] == 200
    assert [m["messageId"] for m in await listed()] == [later["messageId"]]
    assert (await api.call("GET", "/v1/scheduled?identity=nobody@example.test"))[0] == 404
    assert (await api.call("POST", f"/v1/messages/{later['messageId']}/cancel"))[0] == 200


async def test_a_time_that_cannot_be_is_400_naming_the_field(api: Api, relay: Relay) -> None:
    handle, _ = await make_identity(api, relay)
    for send_at, zone, words in [
        ("2020-01-01T00:00:00Z", None, "sendAt: is in the past"),
        ("2027-03-14T02:30:00", "America/Chicago", "sendAt: 2027-03-14T02:30:00 does not exist"),
        ("2027-03-14T09:00:00", "Nowhere/Else", "timezone: "),
    ]:
        body = {"to": "x@example.test", "subject": "s", "text": "t", "sendAt": send_at}
        if zone:
            body["timezone"] = zone
        status, answer, _ = await api.call("POST", f"/v1/identities/{handle}/send", body)
        assert status == 400 and answer["error"]["message"].startswith(words), answer
    assert relay.received == []


async def test_a_scheduled_send_fires_once_across_a_whole_stack_restart_before_its_time(
    service_env: dict, relay: Relay, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Scheduled, then every process stopped and the broker's log lost with them, then all started again
    as `make run` does: it fires once, not before its time (its timer is in PostgreSQL)."""
    async with local_stack(service_env, tmp_path_factory) as local, aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{local.env['SENDSTREAM_HTTP_PORT']}"
        api = await new_org(Api(session, base, local.env["SENDSTREAM_BOOTSTRAP_API_KEY"]))
        handle = await identity_for(api, relay)
        _, at = await schedule(api, handle, "restart@example.test", 25)
        local.stack.stop_all()
        local.stop_broker()
        local.start_broker()
        local.start_services()
        assert datetime.now(UTC) < at, "the restart took longer than the schedule allows for"
        [got] = await relay.wait_for(1, timeout=60)
        assert datetime.now(UTC) >= at and got.rcpt_tos == ["restart@example.test"]
        assert len(await relay.before_marker(through(api, handle))) == 1  # once


async def test_the_inboxes_and_mailboxes_dialects_schedule_too_and_any_dialects_message_is_cancelled_alike(
    api: Api, relay: Relay
) -> None:
    at = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
    email = f"desk-{uuid.uuid4().hex[:6]}@agents.example.test"
    _, inbox, _ = await api.call("POST", "/v1/inboxes", {"email": email, "smtp": relay.smtp_settings()})
    status, sent, _ = await api.call(
        "POST", f"/v1/inboxes/{inbox['id']}/messages/send",
        {"to": ["ana@example.test"], "subject": "Later", "text": "t", "html": "<p>t</p>", "sendAt": at.isoformat()},
    )  # fmt: skip
    assert status == 200 and (sent["status"], datetime.fromisoformat(sent["sendAt"])) == ("scheduled", at), sent

    address = await new_mailbox(api, relay)
    status, later, _ = await api.call(
        "POST", f"/mailboxes/{address}/messages",
        {"recipients": {"to": ["bo@example.test"]}, "subject": "Never", "body_text": "t",
         "send_at": "2027-01-07T09:00:00", "timezone": "Europe/Paris"},
    )  # fmt: skip
    assert status == 201 and later["status"] == "scheduled", later
    assert later["send_at"] == "2027-01-07T08:00:00.000Z"  # 09:00 in Paris, winter time
    status, bad, _ = await api.call(
        "POST", f"/mailboxes/{address}/messages",
        {"recipients": {"to": ["bo@example.test"]}, "subject": "s", "body_text": "t", "unless_replied": True},
    )  # fmt: skip
    assert status == 400 and "unless_replied" in json.dumps(bad), bad
    status, cancelled, _ = await api.call("POST", f"/v1/messages/{later['id']}/cancel")
    assert status == 200 and cancelled["status"] == "cancelled", cancelled

    [got] = await relay.wait_for(1, timeout=20)
    assert datetime.now(UTC) >= at and got.rcpt_tos == ["ana@example.test"]


async def test_a_recipient_over_the_daily_cap_is_deferred_to_midnight_in_the_identitys_zone(
    api: Api, relay: Relay, db
) -> None:
    """`onCapExceeded: defer`: what the cap has no room for today waits for the next local midnight, and is
    decided when it fires as if it were sent then (here: once the cap was raised, it goes out)."""
    handle, _ = await make_identity(api, relay, daily_cap=1)
    assert (await api.call("PATCH", f"/v1/identities/{handle}", {"timezone": "America/Chicago"}))[0] == 200
    status, body, _ = await api.call(
        "POST", f"/v1/identities/{handle}/send",
        {"to": ["now@example.test", "tomorrow@example.test"], "subject": "Cap", "text": "t", "onCapExceeded": "defer"},
    )  # fmt: skip
    assert status == 202 and (body["accepted"], body["rejected"], body["scheduled"]) == (1, 0, 1), body
    deferred = body["messages"][1]
    chicago = ZoneInfo("America/Chicago")
    midnight = datetime.combine(datetime.now(chicago).date() + timedelta(days=1), time(), tzinfo=chicago)
    assert (deferred["status"], deferred["reason"]) == ("scheduled", "cap_deferred"), deferred
    assert datetime.fromisoformat(deferred["sendAt"]) == midnight, (deferred, midnight)
    status, listed, _ = await api.call("GET", f"/v1/scheduled?identity={handle}")
    assert [m["messageId"] for m in listed["data"]] == [deferred["messageId"]], listed

    # The clock moved on to its time (its timer made due now), with room made in the cap meanwhile.
    assert (await api.call("PATCH", f"/v1/identities/{handle}", {"dailyCap": 5}))[0] == 200
    fire = firing_id(ids.parse("message", deferred["messageId"]), midnight)
    assert await db.fetchval("UPDATE timers SET due_at = now() WHERE event_id = $1 RETURNING true", fire)
    await db.execute(f"SELECT pg_notify('{timers.CHANNEL}', '')")
    got = await relay.wait_for(2, timeout=20)
    assert sorted(r.rcpt_tos[0] for r in got) == ["now@example.test", "tomorrow@example.test"]


async def _said(log: Path, words: str) -> bool:
    return log.exists() and words in log.read_text()


async def _is(found, expected: str) -> bool:
    return await found == expected





async def test_a_mailbox_warming_up_takes_no_more_than_its_ramp_allows_and_more_as_the_days_pass(
    api: Api, relay: Relay
) -> None:
    handle, [mailbox] = await make_identity(api, relay)
    url = f"/v1/identities/{handle}/mailboxes/{mailbox['id']}"
    status, warming, _ = await api.call("PATCH", url, {"warmup": {"startPerDay": 2, "increasePerDay": 1}})
    assert status == 200 and warming["effectiveDailyLimit"] == 2 and warming["warmup"]["startPerDay"] == 2, warming

    async def send_four(tag: str) -> dict:
        status, body, _ = await api.call(
            "POST", f"/v1/identities/{handle}/send",
            {"to": [f"{tag}{i}@example.test" for i in range(4)], "subject": "Ramp", "text": "t"},
        )  # fmt: skip
        assert status == 202, body
        return body

    body = await send_four("day0-")
    assert (body["accepted"], body["rejected"]) == (2, 2), body
    assert {m["reason"] for m in body["messages"] if m["status"] == "rejected"} == {"mailbox_unavailable"}

    # Three days on (the ramp's start moved back by as much): 2 + 3 a day, of which 2 are used today.
    began = (datetime.now(UTC) - timedelta(days=3, minutes=1)).isoformat()
    status, warmed, _ = await api.call("PATCH", url, {"warmup": {"startPerDay": 2, "increasePerDay": 1, "startedAt": began}})
    assert status == 200 and warmed["effectiveDailyLimit"] == 5, warmed
    body = await send_four("day3-")
    assert (body["accepted"], body["rejected"]) == (3, 1), body
    status, bad, _ = await api.call("PATCH", url, {"warmup": {"startPerDay": 2, "startedAt": "2099-01-01T00:00:00Z"}})
    assert status == 400 and "warmup.startedAt" in bad["error"]["message"], bad
    status, ended, _ = await api.call("PATCH", url, {"warmup": None})
    assert status == 200 and ended["warmup"] is None and ended["effectiveDailyLimit"] is None, ended


async def test_with_two_scheduler_processes_each_scheduled_send_fires_once(
    api: Api, relay: Relay, stack: Stack
) -> None:
    stack.start("scheduler-2", ["-m", "services.scheduler"])
    try:
        log = stack.log_dir / "scheduler-2.log"  # the scheduler serves no probes: its log says it started
        assert await eventually(lambda: _said(log, "service started"), timeout=60)
        handle, _ = await make_identity(api, relay)
        at = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
        to = [f"twice{i}@example.test" for i in range(40)]
        status, body, _ = await api.call(
            "POST", f"/v1/identities/{handle}/send", {"to": to, "subject": "Once", "text": "t", "sendAt": at.isoformat()}
        )  # fmt: skip
        assert status == 202 and body["scheduled"] == 40, body
        await relay.wait_for(40, timeout=30)
        got = await relay.before_marker(through(api, handle))
        assert sorted(r.rcpt_tos[0] for r in got) == sorted(to)  # each once
    finally:
        stack.stop("scheduler-2")
