"""The intake of received mail, shared by the inbound SMTP server and dispatch (mail between hosted
addresses): which identities an address is for, sender rules, and keeping a message: raw bytes and
attachments in the blob store, then its arrivals (or what a report or an unsubscribe says) on the log.

Ids derive from the message (its bytes, or for mail of ours the message id), so the same message
handed over twice is the same events, which every consumer drops the second time.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import structlog
from faststream.kafka import KafkaBroker
from prometheus_client import Counter

from mail.parse import Limits, Parsed, Unacceptable, parse
from mail.reports import Report
from mail.rules import normalised, refusal
from schemas.envelope import Envelope
from schemas.events import (
    ArrivedMessage,
    Attachment,
    Authentication,
    Content,
    DispatchDeferred,
    DispatchDeferredPayload,
    MailboxHealthChanged,
    MailboxHealthPayload,
    MessageArrived,
    MessageArrivedPayload,
    MessageBounced,
    MessageComplained,
    MessageDelivered,
    RecipientStatus,
    SuppressionAdded,
    SuppressionAddedPayload,
)
from services.common.broker import EventTooLarge, hand_over, is_transient, publish_events
from services.common.domain import bodies, unsubscribe
from services.common.domain.blobs import BlobStore
from services.common.settings import CommonSettings

log = structlog.get_logger("sendstream.inbound")
RECEIVED = Counter("sendstream_inbound_messages_total", "Inbound SMTP transactions by outcome", ["outcome"])
_IDS = uuid.UUID("5b0c7e0e-61a4-4c0e-9d7e-2f3b8c1a9e55")  # namespace of the ids derived from a message
# Room an arrival leaves in its event for what decide adds (as ingress/context.py's DERIVED_HEADROOM).
_HEADROOM = 32 * 1024
# What the same bytes would fail with every time (a parser's or a database's refusal of what the message
# says, a bug on odd input): never a reason to make the sender try again.
_CONTENT_ERRORS = (
    ValueError, TypeError, LookupError, AttributeError, RecursionError, UnicodeError, asyncpg.DataError,
)  # fmt: skip


@dataclass(frozen=True)
class Target:
    """Who an address delivers to: an identity (by its handle, or an account of its pool)."""

    identity_id: UUID
    org_id: UUID
    mailbox_id: UUID | None
    dialect: str


def targets_sql(addresses: str) -> str:
    """Who mail to each address is for: a query with `addresses` (a parameter such as `$1`) as the
    lower-cased addresses, so a consumer can put it in a query of its own."""
    return f"""
SELECT lower(i.handle) AS address, i.id AS identity_id, i.org_id, NULL::uuid AS mailbox_id, i.dialect,
       true AS by_handle, i.created_at
  FROM identities i WHERE lower(i.handle) = ANY({addresses}::text[]) AND i.deleted_at IS NULL
UNION ALL
SELECT lower(m.email), m.identity_id, m.org_id, m.id, i.dialect, false, m.created_at
  FROM mailboxes m JOIN identities i ON i.id = m.identity_id
 WHERE lower(m.email) = ANY({addresses}::text[]) AND m.deleted_at IS NULL AND i.deleted_at IS NULL
"""


TARGETS = targets_sql("$1")


async def hosted(pool: asyncpg.Pool, addresses: list[str]) -> dict[str, list[Target]]:
    """The identities mail to each of `addresses` is for (the hosted ones only, by lower-cased address).

    An address belongs to one organization (services/ingress/core/domains.py); where data from before
    that rule gives it to several, it is the one that took it first, and `sendstream addresses conflicts`
    lists the others. A handle is one identity's (handles are unique); an address that is no handle
    reaches every identity of the organization with an account of that address."""
    return targets_from(addresses, await pool.fetch(TARGETS, [a.lower() for a in addresses]))


def targets_from(addresses: list[str], rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Target]]:
    """`hosted` from the rows of TARGETS for these addresses (a consumer may read them in a query of its own)."""
    out: dict[str, list[Target]] = {}
    for address in addresses:
        mine = [r for r in rows if r["address"] == address.lower()]
        if not mine:
            continue
        owner = min(mine, key=lambda r: (r["created_at"], r["identity_id"]))["org_id"]
        mine = [r for r in mine if r["org_id"] == owner]
        by_handle = {r["identity_id"] for r in mine if r["by_handle"]}
        found: dict[UUID, Target] = {}
        for r in mine:
            if by_handle and r["identity_id"] not in by_handle:
                continue
            known = found.get(r["identity_id"])
            if known is None or (known.mailbox_id is None and r["mailbox_id"] is not None):
                found[r["identity_id"]] = Target(r["identity_id"], r["org_id"], r["mailbox_id"], r["dialect"])
        out[address.lower()] = list(found.values())
    return out


async def targets_of(pool: asyncpg.Pool, address: str) -> list[Target]:
    return (await hosted(pool, [address])).get(address.lower(), [])


# The conversation a message answers: decide's thread state first (written before any message of
# ours goes out, so a reply can never outrun it), then the messages view (a long thread's references
# keep only its root and latest messages).
THREAD = """
SELECT conv_id FROM (
    SELECT conv_id, 0 AS source, (last_rfc_message_id = ANY($3::text[])) AS latest, updated_at AS at
      FROM threads WHERE refs && $3::text[] AND org_id = $1 AND identity_id = $2
    UNION ALL
    SELECT conv_id, 1, false, created_at FROM messages
     WHERE org_id = $1 AND identity_id = $2 AND rfc_message_id = ANY($3::text[]) AND conv_id IS NOT NULL
) found ORDER BY source, latest DESC, at DESC LIMIT 1
"""


# The message of ours a report is about, with what it was sent to and from. Our Message-IDs are
# `<message_id@domain>`; the recipients decide's publisher records before the message goes out come
# first (a report can come back before the views have the message), then the views (a message sent
# before those records were kept, or whose record was swept).
_UNSUBSCRIBE = re.compile(r"^\s*unsubscribe\s+([A-Za-z0-9_-]{40,64})\s*$", re.IGNORECASE)
_OUR_MESSAGE_ID = re.compile(r"^<([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})@")
ORIGINAL = """
SELECT o.id, o.org_id, o.identity_id, o.mailbox_id, o.mailbox_email, o.recipients, lower(i.handle) AS handle
  FROM (SELECT message_id AS id, org_id, identity_id, mailbox_id, mailbox_email, recipients, 0 AS source
          FROM sent_recipients
         WHERE message_id = $3::uuid AND rfc_message_id = $2 AND org_id = ANY($1::uuid[])
        UNION ALL
        SELECT id, org_id, identity_id, mailbox_id, lower(mailbox_email),
               ARRAY(SELECT lower(a) FROM unnest(to_addrs || cc_addrs || bcc_addrs) AS a), 1
          FROM messages
         WHERE org_id = ANY($1::uuid[]) AND rfc_message_id = $2 AND direction = 'outbound') o
  LEFT JOIN identities i ON i.id = o.identity_id
 ORDER BY o.source LIMIT 1
"""
UNMATCHED = """
INSERT INTO unmatched_reports (org_id, message_id, kind, outcome, recipient, reason, sender, arrived_at, raw_sha256)
SELECT $1, $2, $3, o, r, why, $4, $5, $6 FROM unnest($7::text[], $8::text[], $9::text[]) AS u(o, r, why)
ON CONFLICT (raw_sha256, message_id, recipient) DO NOTHING
"""


def unmatched(report: Report, original: asyncpg.Record, arrived_at: list[str]) -> dict[str, str]:
    """The recipients of `report` it does not count for, each with the reason: only a recipient the
    message was sent to (To, Cc, Bcc) counts, and only in a report that came back to the address the
    message was sent from (its mailbox's, or the identity's handle, where our inbound takes its mail).
    Addresses compare as `normalised` (a report may name a recipient by its domain's IDNA form)."""
    ours = {normalised(a) for a in (original["mailbox_email"], original["handle"]) if a}
    if not ours & {normalised(a) for a in arrived_at}:
        why = (
            f"the report came to {', '.join(arrived_at) or 'no address'}, "
            f"not to {original['mailbox_email']}, which sent the message"
        )
        return {r.recipient: why for r in report.recipients}
    sent_to = {normalised(a) for a in original["recipients"]}
    return {
        r.recipient: "the message was not sent to this address"
        for r in report.recipients
        if normalised(r.recipient) not in sent_to
    }


async def screened(
    pool: asyncpg.Pool, targets: list[Target], sender: str | list[str], recipient: str, stage: str
) -> list[Target]:
    """The targets whose organization's sender rules let mail from `sender` through (an address, or
    several: every mailbox a message's From and Sender headers name); each refusal is recorded, with
    the sender refused."""
    if not targets:
        return []
    rules: dict[UUID, list[tuple[str, str]]] = {}
    for r in await pool.fetch(
        "SELECT org_id, pattern, action FROM sender_rules WHERE org_id = ANY($1::uuid[])",
        list({t.org_id for t in targets}),
    ):
        rules.setdefault(r["org_id"], []).append((r["pattern"], r["action"]))
    kept, refused = [], []
    for t in targets:
        blocked, rule, who = refusal(rules.get(t.org_id, ()), sender)
        (refused if blocked else kept).append((t, rule, who))
    if refused:
        RECEIVED.labels(f"refused_at_{stage}").inc()
        await pool.executemany(
            "INSERT INTO refused_mail (org_id, sender, recipient, stage, rule) VALUES ($1, $2, $3, $4, $5)",
            [(t.org_id, who, recipient, stage, rule) for t, rule, who in refused],
        )
        log.info("mail refused by sender rules", sender=refused[0][2], recipient=recipient,
                 stage=stage)  # fmt: skip
    return [t for t, _, _ in kept]


class Refused(Exception):
    """Every recipient's organization refuses the message's sender."""


# A mailbox's health and, over its latest sends (decided ones), how many there were and how many bounced;
# the message a new bounce is about is counted as bounced by the caller, not here.
BOUNCE_RATE = """
WITH recent AS (
    SELECT id, status FROM messages
     WHERE mailbox_id = $1 AND direction = 'outbound' AND status NOT IN ('queued', 'rejected')
     ORDER BY created_at DESC LIMIT $2
)
SELECT (SELECT health FROM mailboxes WHERE id = $1) AS health, count(*) AS sends,
       count(*) FILTER (WHERE status = 'bounced' AND id <> $3) AS bounced FROM recent
"""


@dataclass
class Turn:
    """A message's place among messages kept at once: its events go to the producer once the one before
    it has `handed` its own over (or had none), and the producer keeps that order on the log."""

    before: asyncio.Event | None
    handed: asyncio.Event = field(default_factory=asyncio.Event)


class Intake:
    """Keeps a received message and puts its arrival on the log, once per receiving identity."""

    def __init__(self, settings: CommonSettings, pool: asyncpg.Pool, broker: KafkaBroker, blobs: BlobStore):
        self.settings, self.pool, self.broker, self.blobs = settings, pool, broker, blobs

    async def content_of(self, parsed: Parsed, orgs: set[UUID]) -> Content:
        """The message's content, its files and large bodies in the blob store for `orgs`."""
        attachments = []
        for f in parsed.files:
            ref = await self.blobs.put(f.data, f.content_type, orgs)
            attachments.append(Attachment(filename=f.filename, **ref.model_dump()))
        content = Content(
            subject=parsed.subject, text=parsed.text, html=parsed.html, cc=parsed.cc,
            in_reply_to=parsed.in_reply_to, references=parsed.references, attachments=attachments,
            reply_to=parsed.reply_to,
        )  # fmt: skip
        return await bodies.offload(self.blobs, content, self.settings.body_inline_max_bytes, orgs)

    async def arrival(
        self,
        target: Target,
        recipients: list[str],
        parsed: Parsed,
        content: Content,
        origin: str,
        raw,
        from_identity: UUID | None,
        authentication: Authentication | None,
    ) -> MessageArrived:
        key = f"{origin}:{target.identity_id}"
        conv_id = await self.pool.fetchval(THREAD, target.org_id, target.identity_id, parsed.answers)
        message = ArrivedMessage(
            message_id=uuid.uuid5(_IDS, f"message:{key}"), rfc_message_id=parsed.rfc_message_id,
            from_addr=parsed.from_addr, to=parsed.to, recipients=recipients,
            content=content.model_copy(update={"dialect": target.dialect}), raw=raw, auto_reply=parsed.auto_reply,
            reply_text=parsed.reply_text, authentication=authentication or Authentication(),
            from_identity_id=from_identity,
        )  # fmt: skip
        return MessageArrived(
            event_id=uuid.uuid5(_IDS, f"arrival:{key}"),
            org_id=target.org_id,
            identity_id=target.identity_id,
            correlation_id=f"smtp:{raw.sha256[:16]}",
            payload=MessageArrivedPayload(
                message=message,
                conv_id=conv_id or uuid.uuid5(_IDS, f"conversation:{key}"),
                mailbox_id=target.mailbox_id,
            ),
        )

    async def report_events(
        self, report: Report, recipients: dict[str, list[Target]], sender: str, raw_sha: str
    ) -> list[Envelope] | None:
        """What a delivery or feedback report about one of our messages says happened to it (None: it is
        about no message of the organizations it was sent to, and is received as any other mail). A
        recipient that failed for good (5.x.x) or complained is suppressed, with the report's event as
        the cause. What the report says counts only where it is borne out by what we sent (`unmatched`):
        the rest is recorded in `unmatched_reports` and the log, and changes nothing."""
        orgs = {t.org_id for targets in recipients.values() for t in targets}
        ours = _OUR_MESSAGE_ID.match(report.original_message_id or "")
        original = await self.pool.fetchrow(
            ORIGINAL, list(orgs), report.original_message_id, uuid.UUID(ours.group(1)) if ours else None
        )
        if original is None:
            return None
        arrived_at = sorted(
            a.lower() for a, ts in recipients.items() if any(t.org_id == original["org_id"] for t in ts)
        )
        refused = unmatched(report, original, arrived_at)
        if refused:
            RECEIVED.labels("unmatched_report").inc()
            wrong = [r for r in report.recipients if r.recipient in refused]
            await self.pool.execute(
                UNMATCHED, original["org_id"], original["id"], report.kind, sender, arrived_at, raw_sha,
                [r.outcome for r in wrong], [r.recipient for r in wrong], [refused[r.recipient] for r in wrong],
            )  # fmt: skip
            log.warning("a report not borne out by what we sent; recorded, nothing changed", kind=report.kind,
                        message_id=str(original["id"]), sender=sender, arrived_at=arrived_at,
                        recipients=[r.recipient for r in wrong], reason=refused[wrong[0].recipient])  # fmt: skip
        sent_as = {normalised(a): a for a in original["recipients"]}  # each as the message was sent to it
        report = Report(
            report.kind,
            report.original_message_id,
            [
                replace(r, recipient=sent_as[normalised(r.recipient)])
                for r in report.recipients
                if r.recipient not in refused
            ],
        )
        common = {
            "org_id": original["org_id"], "identity_id": original["identity_id"],
            "correlation_id": f"smtp:{raw_sha[:16]}",
        }  # fmt: skip
        events: list[Envelope] = []
        for r in report.recipients:
            key = f"{raw_sha}:{original['id']}:{r.recipient}"
            status = RecipientStatus(
                message_id=original["id"], recipient=r.recipient, status=r.status, diagnostic=r.diagnostic
            )
            if r.outcome == "delayed":
                if original["mailbox_id"] is not None:
                    events.append(DispatchDeferred(**common, event_id=uuid.uuid5(_IDS, f"delay:{key}"),
                        payload=DispatchDeferredPayload(
                            message_id=original["id"], mailbox_id=original["mailbox_id"], attempt=0,
                            next_attempt_at=datetime.now(UTC),
                            reason=f"the recipient's server reports a delay for {r.recipient}: {r.status} {r.diagnostic}",
                        )))  # fmt: skip
                continue
            kind = {"failed": MessageBounced, "complained": MessageComplained, "delivered": MessageDelivered}
            outcome = kind[r.outcome](
                **common, event_id=uuid.uuid5(_IDS, f"{r.outcome}:{key}"), payload=status
            )
            events.append(outcome)
            reason = (
                "complaint"
                if r.outcome == "complained"
                else "hard_bounce"
                if r.status.startswith("5")
                else None
            )
            if r.outcome != "delivered" and reason:
                events.append(SuppressionAdded(
                    **common, event_id=uuid.uuid5(_IDS, f"suppress:{key}"), causation_id=outcome.event_id,
                    payload=SuppressionAddedPayload(address=r.recipient, reason=reason, message_id=original["id"]),
                ))  # fmt: skip
        if any(r.outcome == "failed" and r.status.startswith("5") for r in report.recipients):
            events += await self.health_after_bounce(original, common, raw_sha)
        return events

    async def health_after_bounce(
        self, original: asyncpg.Record, common: dict, raw_sha: str
    ) -> list[Envelope]:
        """A MailboxHealthChanged when this bounce takes the mailbox's hard-bounce rate over its latest
        sends past the threshold (the bounce itself is not in the views yet: it is counted here)."""
        if original["mailbox_id"] is None:
            return []
        s = self.settings
        row = await self.pool.fetchrow(
            BOUNCE_RATE, original["mailbox_id"], s.mailbox_bounce_window, original["id"]
        )
        sends, bounced = row["sends"], row["bounced"] + 1
        if (
            row["health"] != "healthy"
            or sends < s.mailbox_bounce_min_sends
            or bounced / sends < s.mailbox_bounce_threshold
        ):
            return []
        log.warning("mailbox made unhealthy by its bounce rate", mailbox_id=str(original["mailbox_id"]),
                    bounced=bounced, sends=sends)  # fmt: skip
        return [MailboxHealthChanged(
            **common, event_id=uuid.uuid5(_IDS, f"health:{raw_sha}:{original['mailbox_id']}"),
            payload=MailboxHealthPayload(mailbox_id=original["mailbox_id"], health="unhealthy", previous="healthy"),
        )]  # fmt: skip

    async def keep(
        self,
        data: bytes,
        mail_from: str,
        recipients: dict[str, list[Target]],
        origin: str | None = None,
        from_identity: UUID | None = None,
        authentication: Authentication | None = None,
        turn: Turn | None = None,
    ) -> str:
        """Store `data` and publish its arrivals (or, for a report about one of our messages, what it
        reports); returns the queue id the 250 names. The arrivals' ids derive from `origin` (default:
        the bytes' hash), so the same message handed over again is the same events. With a `turn`, they
        go to the producer after the message before it (messages kept at once reach the log in order).

        Raises Refused (the sender rules) or Unacceptable: what the same bytes would fail with every
        time (a structure beyond the limits, events too large for the log, any error on what the message
        says), refused for good. Anything else is our own trouble (the database, the broker): try again."""
        try:
            return await self._keep(data, mail_from, recipients, origin, from_identity, authentication, turn)
        except (Refused, Unacceptable):
            raise
        except EventTooLarge as exc:
            RECEIVED.labels("too_large").inc()
            log.warning("a received message is too large to keep; refused", size=exc.size, limit=exc.limit)
            raise Unacceptable(552, "5.3.4", "the message's headers and text are too large to keep") from exc
        except _CONTENT_ERRORS as exc:
            if is_transient(exc):
                raise
            RECEIVED.labels("unreadable").inc()
            log.error("a received message cannot be kept as it is; refused", exc_info=exc)
            raise Unacceptable(554, "5.6.0", "the message cannot be read as it is") from exc

    async def _keep(
        self,
        data: bytes,
        mail_from: str,
        recipients: dict[str, list[Target]],
        origin: str | None,
        from_identity: UUID | None,
        authentication: Authentication | None,
        turn: Turn | None,
    ) -> str:
        limit = self.settings.max_event_bytes - _HEADROOM  # decide's events about an arrival must fit too

        async def publish(events: list[Envelope]) -> None:
            if turn is None:
                return await publish_events(self.broker, self.settings, events, limit)
            if turn.before is not None:
                await turn.before.wait()
            try:
                acks = await hand_over(self.broker, self.settings, events, limit)
            finally:
                turn.handed.set()
            await asyncio.gather(*acks)

        s = self.settings
        limits = Limits(s.intake_max_nesting, s.intake_max_parts, s.intake_max_header_fields)
        # The parser's work on a stranger's bytes, off the event loop (other sessions go on meanwhile).
        parsed = await asyncio.to_thread(parse, data, mail_from, limits)
        # Every sender the headers name (each From mailbox, and Sender) that is not the envelope's, as
        # the rules see it too
        if header := [a for a in parsed.senders if normalised(a) != normalised(mail_from)]:
            recipients = {a: await screened(self.pool, ts, header, a, "data") for a, ts in recipients.items()}
            recipients = {a: ts for a, ts in recipients.items() if ts}
            if not recipients:
                raise Refused(", ".join(header))
        orgs = {t.org_id for targets in recipients.values() for t in targets}
        raw = await self.blobs.put(data, "message/rfc822", orgs)
        if (asked := _UNSUBSCRIBE.match(parsed.subject)) and (key := unsubscribe.key_of(self.settings)):
            event = await unsubscribe.follow(self.pool, key, asked.group(1))
            if event is not None and event.org_id in orgs:  # the List-Unsubscribe mailto of one of ours
                await publish([event])
                log.info("unsubscribed by mail", message_id=str(event.payload.message_id))
                return raw.sha256[:16]
        report = parsed.report if parsed.report and parsed.report.original_message_id else None
        if (
            report
            and (events := await self.report_events(report, recipients, mail_from, raw.sha256)) is not None
        ):
            await publish(events)
            for e in events:  # after the fact is on the log: a retry finds the mailbox as it left it
                if isinstance(e, MailboxHealthChanged):
                    await self.pool.execute(
                        "UPDATE mailboxes SET health = 'unhealthy', updated_at = now() WHERE id = $1 AND health = 'healthy'",
                        e.payload.mailbox_id,
                    )
            log.info("report received", kind=report.kind, about=report.original_message_id,
                     events=[e.type for e in events])  # fmt: skip
            return raw.sha256[:16]
        content = await self.content_of(parsed, orgs)
        by_identity: dict[UUID, tuple[Target, list[str]]] = {}
        for address, targets in recipients.items():
            for t in targets:
                by_identity.setdefault(t.identity_id, (t, []))[1].append(address)
        arrivals = [
            await self.arrival(
                t, addresses, parsed, content, origin or raw.sha256, raw, from_identity, authentication
            )
            for t, addresses in by_identity.values()
        ]
        await publish(arrivals)
        log.info(
            "message received", rfc_message_id=parsed.rfc_message_id, identities=len(arrivals),
            message_ids=[str(e.payload.message.message_id) for e in arrivals], size=len(data),
        )  # fmt: skip
        return raw.sha256[:16]
