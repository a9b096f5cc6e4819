"""What each message we send went to, kept before it goes out (migration 031_reports.sql), so that a
report about it can be checked against it (services/common/domain/receiving/intake.py): decide's publisher
records its accepted sends before publishing them, off the path a send request waits on."""

from __future__ import annotations

import json

import asyncpg

from schemas.envelope import Envelope
from schemas.events import SendAccepted

RECORD = """
INSERT INTO sent_recipients (message_id, org_id, identity_id, mailbox_id, mailbox_email, rfc_message_id, recipients)
SELECT m, o, i, b, e, r, ARRAY(SELECT jsonb_array_elements_text(t::jsonb))
  FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[])
    AS w(m, o, i, b, e, r, t)
ON CONFLICT (message_id) DO NOTHING
"""

# Older rows are not needed: the views have every message by then (a report about one is looked up there).
SWEEP = "DELETE FROM sent_recipients WHERE created_at < now() - make_interval(days => $1)"
KEPT_DAYS = 30


def recipients(accepted: SendAccepted) -> list[str]:
    """Every address the message goes to (To, Cc, Bcc), lower-cased."""
    p = accepted.payload
    return [a.lower() for a in (*p.to, *p.content.cc, *p.content.bcc)]


def columns(accepted: list[SendAccepted]) -> list[list]:
    """RECORD's arguments ($1 to $7) for these accepted sends."""
    return [
        [d.payload.message_id for d in accepted],
        [d.org_id for d in accepted],
        [d.identity_id for d in accepted],
        [d.payload.mailbox_id for d in accepted],
        [d.payload.mailbox_email.lower() for d in accepted],
        [d.payload.rfc_message_id for d in accepted],
        [json.dumps(recipients(d)) for d in accepted],
    ]


async def record(pool: asyncpg.Pool | asyncpg.Connection, decisions: list[Envelope]) -> None:
    """Keep the recipients and mailbox of every accepted send among `decisions` (again: no change)."""
    accepted = [d for d in decisions if isinstance(d, SendAccepted)]
    if not accepted:
        return
    await pool.execute(RECORD, *columns(accepted))


async def sweep(pool: asyncpg.Pool) -> None:
    await pool.execute(SWEEP, KEPT_DAYS)
