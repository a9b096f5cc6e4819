"""Decide: requests -> SendAccepted | SendRejected.

Requests are keyed by identity, so one partition owner decides all of an identity's sends in order:
caps and affinity need no cross-process locks. The state read, the state written and the events
decided are committed in one transaction with the request's `event_id`; a redelivered request
re-publishes the recorded decisions instead of deciding again.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
import structlog
from faststream.kafka import KafkaBroker

from schemas import topics
from schemas.envelope import Envelope
from schemas.events import ReplyRequested, SendAccepted, SendRequested
from services.common import db
from services.common.broker import bound, publish_events, subscribe
from services.common.settings import CommonSettings
from services.common.timezones import local_day_start
from services.decide.affinity import IdentityState, MailboxState, decide_send
from services.decide.replies import Thread, decide_reply

CONSUMER = "decide"
log = structlog.get_logger("sendstream.decide")


async def load_state(
    conn: asyncpg.Connection, identity_id: UUID, recipients: list[str], now: datetime
) -> IdentityState:
    """The identity's cap and usage today, its mailboxes with their usage, and the recipients' pins."""
    identity = await conn.fetchrow(
        "SELECT id, handle, daily_cap, timezone, deleted_at FROM identities WHERE id = $1", identity_id
    )
    if identity is None:
        return IdentityState(identity_id, "", 0, 0, (), active=False)
    day_start = local_day_start(now, identity["timezone"])
    used = await conn.fetchval(
        "SELECT sent FROM identity_usage WHERE identity_id = $1 AND day = $2",
        identity["id"],
        day_start.date(),
    )
    rows = await conn.fetch(
        """SELECT m.id, m.email, m.health, m.hourly_limit, m.daily_limit,
                  count(s.*) FILTER (WHERE s.sent_at > $2) AS last_hour,
                  count(s.*) FILTER (WHERE s.sent_at >= $3) AS today,
                  max(s.sent_at) AS last_used
             FROM mailboxes m LEFT JOIN mailbox_sends s ON s.mailbox_id = m.id AND s.sent_at >= least($2::timestamptz, $3::timestamptz)
            WHERE m.identity_id = $1 AND m.deleted_at IS NULL
            GROUP BY m.id""",
        identity["id"],
        now - timedelta(hours=1),
        day_start,
    )
    pins = await conn.fetch(
        "SELECT recipient, mailbox_id FROM affinity WHERE identity_id = $1 AND recipient = ANY($2::text[])",
        identity["id"],
        [r.lower() for r in recipients],
    )
    return IdentityState(
        identity_id=identity["id"],
        handle=identity["handle"],
        daily_cap=identity["daily_cap"],
        used_today=used or 0,
        mailboxes=tuple(
            MailboxState(
                id=r["id"],
                email=r["email"],
                health=r["health"],
                hourly_limit=r["hourly_limit"],
                daily_limit=r["daily_limit"],
                sent_last_hour=r["last_hour"],
                sent_today=r["today"],
                last_used_at=r["last_used"],
            )
            for r in rows
        ),
        affinity={r["recipient"]: r["mailbox_id"] for r in pins},
        active=identity["deleted_at"] is None,
        timezone=identity["timezone"],
    )


async def load_thread(conn: asyncpg.Connection, conv_id: UUID) -> Thread | None:
    row = await conn.fetchrow("SELECT * FROM threads WHERE conv_id = $1", conv_id)
    if row is None:
        return None
    return Thread(
        row["conv_id"],
        row["mailbox_id"],
        row["counterpart"],
        row["subject"],
        row["last_rfc_message_id"],
        tuple(row["refs"]),
    )


async def decide(conn: asyncpg.Connection, request: Envelope, now: datetime) -> tuple[list[Envelope], str]:
    """Load what the request needs, decide, and return the decisions with the identity's time zone."""
    if isinstance(request, SendRequested):
        state = await load_state(conn, request.identity_id, [m.to for m in request.payload.messages], now)
        return decide_send(request, state, now), state.timezone
    if isinstance(request, ReplyRequested):
        thread = await load_thread(conn, request.payload.conv_id)
        state = await load_state(conn, request.identity_id, [], now)
        return decide_reply(request, state, thread, now), state.timezone
    log.warning("request type not handled yet", type=request.type)
    return [], "UTC"


async def apply(conn: asyncpg.Connection, decisions: list[Envelope], timezone: str) -> None:
    """Derive decide's state from the decisions themselves: usage, rate window, affinity, thread binding."""
    for e in decisions:
        if not isinstance(e, SendAccepted):
            continue
        p = e.payload
        recipient = p.to[0].lower()
        day = local_day_start(e.occurred_at, timezone).date()
        await conn.execute(
            """INSERT INTO identity_usage (identity_id, day, sent) VALUES ($1, $2, 1)
               ON CONFLICT (identity_id, day) DO UPDATE SET sent = identity_usage.sent + 1""",
            e.identity_id,
            day,
        )
        await conn.execute(
            "INSERT INTO mailbox_sends (mailbox_id, sent_at, message_id) VALUES ($1, $2, $3)",
            p.mailbox_id,
            e.occurred_at,
            p.message_id,
        )
        if p.affinity != "existing":  # a new pin, or a re-pin; replies and reuse leave the pin as it is
            await conn.execute(
                """INSERT INTO affinity (identity_id, recipient, mailbox_id, pinned_at) VALUES ($1, $2, $3, $4)
                   ON CONFLICT (identity_id, recipient) DO UPDATE SET mailbox_id = $3, pinned_at = $4""",
                e.identity_id,
                recipient,
                p.mailbox_id,
                e.occurred_at,
            )
        await conn.execute(
            """INSERT INTO threads (conv_id, org_id, identity_id, mailbox_id, counterpart, subject,
                                    last_rfc_message_id, refs, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
               ON CONFLICT (conv_id) DO UPDATE SET last_rfc_message_id = $7, refs = $8, updated_at = $9""",
            p.conv_id,
            e.org_id,
            e.identity_id,
            p.mailbox_id,
            p.to[0],
            p.content.subject,
            p.rfc_message_id,
            [*p.content.references, p.rfc_message_id],
            e.occurred_at,
        )


def build(broker: KafkaBroker, settings: CommonSettings, pool: asyncpg.Pool) -> None:
    """Register the decide consumer on `broker`."""

    @subscribe(broker, settings, [topics.REQUESTS], group=CONSUMER, path="sync")
    async def on_requests(events: list[Envelope]) -> None:
        """Decide every recipient of each send or reply request: accept with a mailbox, or reject with a reason."""
        now = datetime.now(UTC)
        out: list[Envelope] = []
        async with pool.acquire() as conn, conn.transaction():
            for event in events:
                with bound(event):
                    decisions = await db.claim(conn, CONSUMER, event.event_id)
                    if decisions is None:
                        decisions, timezone = await decide(conn, event, now)
                        await apply(conn, decisions, timezone)
                        await db.finish(conn, CONSUMER, event.event_id, decisions)
                    else:
                        log.info("request already decided, re-publishing its decisions")
                    out.extend(decisions)
        await publish_events(broker, settings, out)
        log.debug("requests decided", requests=len(events), decisions=len(out))
