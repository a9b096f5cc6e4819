"""`sendstream replay` on the running stack: the views rebuilt from the archive equal the live ones after
sends, replies, inbound mail, bounces, suppressions, flags and deletes; a view edited by hand is named
and put right by the swap; `--as-of` rebuilds a view as it was before a later change."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from projections.replay import columns_of
from tests.conftest import Api, Relay, deliver, eventually
from tests.integration.test_archive import sendstream
from tests.integration.test_inbound import _found, _gone, reply_to, suppressions
from tests.unit.test_reports import FAILED, dsn

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def new_inbox(api: Api, relay: Relay) -> tuple[dict, str]:
    email = f"replay-{uuid.uuid4().hex[:6]}@agents.example.test"
    status, inbox, _ = await api.call("POST", "/v1/inboxes", {"email": email, "smtp": relay.smtp_settings()})
    assert status in (200, 201), inbox
    return inbox, email


async def send(api: Api, inbox: dict, to: list[str], subject: str) -> dict:
    status, sent, _ = await api.call(
        "POST", f"/v1/inboxes/{inbox['id']}/messages/send",
        {"to": to, "subject": subject, "text": "Hello", "html": "<p>Hello</p>"},
    )  # fmt: skip
    assert status == 200 and sent["status"] == "sent", sent
    return sent


def uuid_of(api_id: str) -> uuid.UUID:
    return uuid.UUID(api_id.split("_")[-1])


async def _row(db: asyncpg.Pool, message_id: uuid.UUID, ok) -> asyncpg.Record | None:
    row = await db.fetchrow("SELECT * FROM messages WHERE id = $1", message_id)
    return row if row is not None and ok(row) else None


async def waits(api: Api, handle: str) -> dict[uuid.UUID, str]:
    """Messages that wait, each with the status the views should show: scheduled, cancelled before its
    time, held in a pending draft, and in a rejected one."""
    later = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    shown: dict[uuid.UUID, str] = {}
    for status in ("scheduled", "cancelled"):
        code, body, _ = await api.call(
            "POST", f"/v1/identities/{handle}/send", {"to": f"{status}@example.test", "subject": "Later", "text": "t", "sendAt": later}
        )  # fmt: skip
        assert code == 202, body
        shown[uuid_of(body["messages"][0]["messageId"])] = status
    assert (await api.call("POST", f"/v1/messages/{body['messages'][0]['messageId']}/cancel"))[0] == 200
    for status in ("pending_approval", "rejected"):
        code, draft, _ = await api.call(
            "POST", f"/v1/identities/{handle}/drafts", {"to": f"{status}@example.test", "subject": "Draft", "text": "t"}
        )  # fmt: skip
        assert code == 201, draft
        shown[uuid_of(draft["messageIds"][0])] = status
    assert (await api.call("POST", f"/v1/drafts/{draft['id']}/reject", {"reason": "no"}))[0] == 200
    return shown


async def test_replay_reproduces_every_view_and_puts_right_a_view_edited_by_hand(
    api: Api, relay: Relay, inbound: int, db: asyncpg.Pool, service_env: dict
) -> None:
    inbox, email = await new_inbox(api, relay)
    gone, kept = f"gone-{uuid.uuid4().hex[:6]}@example.test", f"kept-{uuid.uuid4().hex[:6]}@example.test"
    sent = await send(api, inbox, [gone, kept], "Intro")
    [original] = await relay.wait_for(1)
    await eventually(
        lambda: _row(db, uuid_of(sent["id"]), lambda r: r["status"] == "sent")
    )  # a reply needs it
    status, reply, _ = await api.call(
        "POST", f"/v1/inboxes/{inbox['id']}/messages/{sent['id']}/reply", {"text": "And?", "html": "<p>And?</p>"}
    )  # fmt: skip
    assert status == 200, reply
    await relay.wait_for(2)
    # their answer comes in; the other recipient's server bounces the first message
    await deliver(inbound, reply_to(original.message, kept, email, "Sounds good"), kept, [email])
    await deliver(
        inbound, dsn(original.message["Message-ID"], FAILED.replace("gone@example.test", gone)), "", [email]
    )
    # flags and a delete through the mailboxes dialect; a suppression added and removed by hand
    first, second = uuid_of(sent["id"]), uuid_of(reply["id"])
    status, _, _ = await api.call(
        "PATCH", f"/mailboxes/{email}/messages/{first}", {"is_read": True, "is_starred": True}
    )
    assert status == 200
    assert (await api.call("DELETE", f"/mailboxes/{email}/messages/{second}"))[0] == 204
    manual = f"manual-{uuid.uuid4().hex[:6]}@example.test"
    assert (await api.call("POST", "/v1/suppressions", {"address": manual}))[0] in (200, 201)
    await eventually(lambda: _found(api, manual))
    assert (await api.call("DELETE", f"/v1/suppressions/{manual}"))[0] == 204

    await eventually(lambda: _row(db, first, lambda r: r["status"] == "bounced" and r["is_starred"]))
    await eventually(lambda: _row(db, second, lambda r: r["deleted_at"] is not None))
    await eventually(lambda: _gone(api, manual))
    assert gone in await suppressions(api)
    org = str(await db.fetchval("SELECT org_id FROM messages WHERE id = $1", first))
    received = await eventually(
        lambda: db.fetchval(
            "SELECT id FROM messages WHERE org_id = $1 AND direction = 'inbound'", uuid.UUID(org)
        )
    )

    # what waits (SPEC 3.5): a send for later, one cancelled, a draft pending and one rejected
    waiting = await waits(api, email)
    for message_id, status in waiting.items():
        await eventually(lambda m=message_id, s=status: _row(db, m, lambda r: r["status"] == s))

    code, out = await sendstream(service_env, "replay", "--org", org, "--check", "--wait", "20")
    assert code == 0 and "equal the live ones, row for row" in out, out
    assert await db.fetchval("SELECT count(*) FROM messages WHERE org_id = $1", uuid.UUID(org)) == 3 + len(waiting)
    assert received is not None

    # the views edited behind the projections' back: a subject changed, a conversation gone, a row
    # no event explains
    conv = await db.fetchval("SELECT conv_id FROM messages WHERE id = $1", first)
    await db.execute("UPDATE messages SET subject = 'edited by hand' WHERE id = $1", first)
    await db.execute("DELETE FROM conversations WHERE id = $1", conv)
    stray = uuid.uuid4()
    await db.execute(
        """INSERT INTO messages (id, org_id, direction, status, status_rank, created_at, updated_at)
           VALUES ($1, $2, 'outbound', 'sent', 2, now(), now())""",
        stray, uuid.UUID(org),
    )  # fmt: skip
    code, out = await sendstream(service_env, "replay", "--org", org, "--check", "--wait", "0")
    assert code == 1, out
    assert f"messages {first}: subject differ" in out, out
    assert f"conversations {conv}: missing from the live view" in out
    assert f"messages {stray}: in the live view, not explained by the log" in out

    code, out = await sendstream(service_env, "replay", "--org", org, "--wait", "0")
    assert code == 0 and "swapped in" in out, out
    assert await db.fetchval("SELECT subject FROM messages WHERE id = $1", first) == "Intro"
    assert await db.fetchval("SELECT count(*) FROM conversations WHERE id = $1", conv) == 1
    assert await db.fetchval("SELECT count(*) FROM messages WHERE id = $1", stray) == 0
    code, out = await sendstream(service_env, "replay", "--org", org, "--check")
    assert code == 0 and "row for row" in out, out
    status, shown, _ = await api.call("GET", f"/v1/inboxes/{inbox['id']}/messages/{sent['id']}")
    assert status == 200 and shown["subject"] == "Intro"


async def test_replay_as_of_rebuilds_a_view_as_it_was_before_a_later_change(
    api: Api, relay: Relay, db: asyncpg.Pool, service_env: dict
) -> None:
    inbox, email = await new_inbox(api, relay)
    message = uuid_of((await send(api, inbox, ["ana@example.test"], "Then and now"))["id"])
    url = f"/mailboxes/{email}/messages/{message}"
    await eventually(lambda: _row(db, message, lambda r: r["status"] == "sent"))
    assert (await api.call("PATCH", url, {"is_read": True}))[0] == 200
    then = await eventually(lambda: _row(db, message, lambda r: r["is_read"]))
    between = datetime.now(UTC)
    await asyncio.sleep(0.05)
    assert (await api.call("PATCH", url, {"is_starred": True, "is_read": False}))[0] == 200
    assert (await api.call("DELETE", url))[0] == 204
    now = await eventually(lambda: _row(db, message, lambda r: r["deleted_at"] is not None))
    assert (now["is_read"], now["is_starred"]) == (False, True)

    schema = f"asof_test_{uuid.uuid4().hex[:8]}"
    org = str(then["org_id"])
    code, out = await sendstream(
        service_env, "replay", "--org", org, "--as-of", between.isoformat(), "--schema", schema
    )
    assert code == 0 and f"are in schema {schema}" in out, out
    try:
        columns = ", ".join(f'"{c}"' for c in await columns_of(db, "messages"))
        rebuilt = await db.fetchrow(f'SELECT {columns} FROM "{schema}".messages WHERE id = $1', message)
        assert rebuilt is not None
        assert dict(rebuilt) == {k: then[k] for k in dict(rebuilt)}  # the row as it was, column for column
        assert (rebuilt["is_read"], rebuilt["is_starred"], rebuilt["deleted_at"]) == (True, False, None)
    finally:
        await db.execute(f'DROP SCHEMA "{schema}" CASCADE')

    # once retention has cut the organization's archive, its views are not swapped for a partial rebuild
    await db.execute("UPDATE archive_heads SET dropped_seq = 1 WHERE org_id = $1", then["org_id"])
    code, out = await sendstream(service_env, "replay", "--org", org)
    assert code == 2 and "nothing is swapped" in out, out
    assert await db.fetchval("SELECT deleted_at FROM messages WHERE id = $1", message) is not None
