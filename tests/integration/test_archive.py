"""The archive through the running stack: the audit trail read from it, and `sendstream audit`."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas import ids, topics
from tests.conftest import Api, Relay, eventually, new_org
from tests.integration.test_dispatch import send_one

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def sendstream(service_env: dict, *args: str) -> tuple[int, str]:
    """Run the installed `sendstream` console command against the stack's database."""
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("sendstream")), *args,
        env={**os.environ, "DATABASE_URL": service_env["DATABASE_URL"], "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode()


async def trail(api: Api, message_id: str) -> list[dict]:
    status, body, _ = await api.call("GET", f"/v1/messages/{message_id}/events")
    return body["data"] if status == 200 else []


async def _when(probe, ok):
    """`probe`'s value if `ok` holds for it, else None (for `eventually`)."""
    value = await probe
    return value if ok(value) else None


async def test_a_sends_trail_shows_the_request_with_its_key_the_decision_and_the_relays_reply(
    api: Api, operator: Api, relay: Relay, db: asyncpg.Pool
) -> None:
    sent = await send_one(api, relay)
    message_id = ids.render("message", uuid.UUID(sent["id"].strip("<>").split("@")[0]))
    events = await eventually(
        lambda: _when(trail(api, message_id), lambda t: [e["type"] for e in t][-1:] == ["MessageSent"])
    )
    assert [e["type"] for e in events] == ["SendRequested", "SendAccepted", "MessageSent"]
    request, decision, outcome = (e["event"]["payload"] for e in events)
    org_id = uuid.UUID(events[0]["event"]["org_id"])
    key_ids = {r["id"] for r in await db.fetch("SELECT id FROM api_keys WHERE org_id = $1", org_id)}
    assert uuid.UUID(request["origin"]["api_key_id"]) in key_ids
    assert len(request["origin"]["request_sha256"]) == 64
    assert decision["mailbox_email"] == sent["account"]["email"] and decision["affinity"] == "new"
    assert outcome["reply"]["code"] == 250
    # each kept once, even though several consumers and re-publishes may have carried it
    counts = await db.fetch(
        "SELECT count(*) AS n FROM event_archive WHERE event_id = ANY($1::uuid[]) GROUP BY event_id",
        [uuid.UUID(e["id"]) for e in events],
    )
    assert [r["n"] for r in counts] == [1, 1, 1]
    other = await new_org(operator)
    assert (await other.call("GET", f"/v1/messages/{message_id}/events"))[0] == 404


async def test_audit_show_and_verify_and_a_tampered_row_named(
    api: Api, relay: Relay, db: asyncpg.Pool, service_env: dict
) -> None:
    sent = await send_one(api, relay)
    message_uuid = uuid.UUID(sent["id"].strip("<>").split("@")[0])
    events = await eventually(
        lambda: _when(trail(api, ids.render("message", message_uuid)), lambda t: len(t) == 3)
    )
    org = events[0]["event"]["org_id"]

    code, out = await sendstream(service_env, "audit", "show", str(message_uuid))
    assert code == 0, out
    assert [t for t in ("SendRequested", "SendAccepted", "MessageSent") if t in out] == [
        "SendRequested", "SendAccepted", "MessageSent"
    ]  # fmt: skip
    assert "code=250" in out

    code, out = await sendstream(service_env, "audit", "verify", "--org", org)
    assert code == 0 and "every hash matches" in out, out

    tampered = events[1]["id"]  # the decision: say, to hide which mailbox sent it
    await db.execute(
        """UPDATE event_archive SET event = jsonb_set(event, '{payload,mailbox_email}', '"someone@else.test"')
            WHERE event_id = $1""",
        uuid.UUID(tampered),
    )
    code, out = await sendstream(service_env, "audit", "verify", "--org", org)
    assert code == 1, out
    assert tampered in out and "changed" in out


async def _messages_logged(service_env: dict) -> int:
    """How many events the messages topic holds."""
    consumer = AIOKafkaConsumer(bootstrap_servers=service_env["KAFKA_BOOTSTRAP_SERVERS"])
    await consumer.start()
    try:
        topic = topics.MESSAGES.name(service_env["SENDSTREAM_KAFKA_TOPIC_PREFIX"])
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


async def follow(service_env: dict, group: str, count: int) -> list[str]:
    """examples/follow_messages.py as a user runs it: the lines it printed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).parents[2] / "examples" / "follow_messages.py"),
        "--group", group, "--count", str(count),
        env={**os.environ, **service_env}, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    return out.decode().splitlines()


async def test_the_example_consumer_follows_the_messages_topic_with_its_own_group(
    api: Api, relay: Relay, service_env: dict
) -> None:
    first = await send_one(api, relay)
    await eventually(lambda: _when(trail(api, ids.render("message", _uuid(first))), lambda t: len(t) == 3))
    logged = await _messages_logged(service_env)
    group = f"crm-{uuid.uuid4().hex[:6]}"
    # Its first run reads the log from the start (and, printing whole batches, what other tests' mail
    # added since it was counted).
    lines = await follow(service_env, group, logged)
    assert len(lines) >= logged
    assert [line.split()[1] for line in lines if str(_uuid(first)) in line] == ["MessageSent"]

    second = await send_one(api, relay)
    await eventually(lambda: _when(trail(api, ids.render("message", _uuid(second))), lambda t: len(t) == 3))
    # And goes on where its group left off (after every line it printed): never the first message again.
    # (Other tests' mail goes on arriving: it reads on until the second message's line comes.)
    later: list[str] = []
    for _ in range(5):
        later += await follow(service_env, group, max(1, await _messages_logged(service_env) - len(lines) - len(later)))
        if any(str(_uuid(second)) in line for line in later):
            break
    assert [line.split()[1] for line in later if str(_uuid(second)) in line] == ["MessageSent"]
    assert not [line for line in later if str(_uuid(first)) in line]


def _uuid(sent: dict) -> uuid.UUID:
    return uuid.UUID(sent["id"].strip("<>").split("@")[0])
