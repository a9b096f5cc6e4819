"""The messages, conversations and suppressions views, as statements derived from each event. Pure.

Events of one message arrive on several topics (requests by identity, decisions by mailbox,
lifecycle by message), so a projection sees them in any order: every statement is an upsert that
fills what its event knows, and a message's status only moves forward (status_rank). A batch folds
each row's upserts into one where that is exact, and runs the rest in rounds (`plan`).
"""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from schemas.envelope import Envelope
from schemas.events import (
    Content,
    DispatchDeferred,
    DraftCancelled,
    DraftCreated,
    DraftRejected,
    MessageBounced,
    MessageComplained,
    MessageDeleted,
    MessageDelivered,
    MessageFailed,
    MessageFlagsChanged,
    MessageReceived,
    MessageSent,
    ReplyRequested,
    SendAccepted,
    SendCancelled,
    SendRejected,
    SendRequested,
    SendScheduled,
    SmtpReply,
    SuppressionAdded,
    SuppressionRemoved,
)
from schemas.status import STATUS_RANK, MessageStatus
from services.common.domain import suppressions

Statement = tuple[str, tuple[Any, ...]]
CONSUMER = "projections"  # the consumer of these views: its group, and its records in processed_events

# The events that change the views (every other type changes nothing here): what replay reads.
PROJECTED = (
    "SendRequested", "ReplyRequested", "SendAccepted", "SendRejected", "MessageSent", "DispatchDeferred",
    "MessageFailed", "MessageReceived", "MessageBounced", "MessageComplained", "MessageDelivered",
    "SuppressionAdded", "SuppressionRemoved", "MessageFlagsChanged", "MessageDeleted", "SendScheduled",
    "SendCancelled", "DraftCreated", "DraftRejected", "DraftCancelled",
)  # fmt: skip


# Columns that describe the current status: only an event of at least the same rank may change them,
# so a late DispatchDeferred cannot put its reason on a message that has since failed or been sent.
STATUS_BOUND = frozenset({"reason", "smtp_code", "smtp_message"})
# The relay's reply is a relay outcome's, whatever a report said after it: a status from a report (which
# only follows a send) ranks with `sent` for these columns, so a MessageSent applied after the report of
# its bounce (on another partition, so in either order) still leaves its reply, as the other order does.
RELAY_REPLY = frozenset({"smtp_code", "smtp_message"})
REPORTED: tuple[MessageStatus, ...] = ("delivered", "bounced", "complained")
_REPLY_RANK = (
    f"CASE WHEN messages.status_rank IN ({', '.join(str(STATUS_RANK[s]) for s in REPORTED)}) "
    f"THEN {STATUS_RANK['sent']} ELSE messages.status_rank END"
)


# The table and the columns (in the order of their arguments) of each upsert statement made here.
SHAPES: dict[str, tuple[str, tuple[str, ...]]] = {}


@dataclass(slots=True)
class Upsert:
    """What one event, or several folded together, knows of one row of messages or conversations: the
    row's statement, and how a later event's upsert folds into it (`merge`)."""

    table: str  # "messages" or "conversations"
    key: UUID
    columns: dict[str, Any]
    created: datetime  # the row's created_at becomes the least of these, its updated_at the greatest
    updated: datetime
    status: MessageStatus | None = None  # messages: the status these events move the row to (None: they do not)
    bound: bool = False  # messages: whether `columns` holds status-bound ones (set at the status's rank)

    @property
    def statement(self) -> Statement:
        names, values = _shape(tuple(self.columns))  # one shape for the same columns, however folded
        if self.table == "conversations":
            return _upsert_conversation_sql(names), (
                self.key,
                *values(self.columns),
                self.created,
                self.updated,
            )
        status = self.status or "queued"
        return _upsert_message_sql(names, self.status is not None), (
            self.key, *values(self.columns), status, STATUS_RANK[status], self.created, self.updated,
        )  # fmt: skip

    def merge(self, later: Upsert) -> bool:
        """Fold `later` (an upsert of the same row, applied after this one) into this one, when the one
        statement changes any row exactly as the two in turn would; False (and nothing done) otherwise.

        Messages: status-bound columns are written only by an event at least as high as the row's status,
        so they fold only when every event carrying them is of the folded status's rank (the highest);
        the status is the first of the highest rank; `direction` is set once, by the first.
        Conversations: a column the later event does not know (None) keeps the earlier value."""
        columns = self.columns
        if self.table == "messages":
            mine = STATUS_RANK[self.status] if self.status else 0
            theirs = STATUS_RANK[later.status] if later.status else 0
            top = max(mine, theirs)
            if (self.bound and mine != top) or (later.bound and theirs != top):
                return False
            if theirs > mine:
                self.status = later.status
            self.bound |= later.bound
            direction = columns["direction"]
            columns.update(later.columns)
            columns["direction"] = direction
        else:
            for c, v in later.columns.items():
                if v is not None or c not in columns:
                    columns[c] = v
        self.created, self.updated = min(self.created, later.created), max(self.updated, later.updated)
        return True


@functools.cache
def _shape(names: tuple[str, ...]) -> tuple[tuple[str, ...], Callable[[dict[str, Any]], tuple[Any, ...]]]:
    """Columns in the order of their statement, and what reads their values from a row's columns."""
    ordered = tuple(sorted(names))
    get = operator.itemgetter(*ordered)
    return ordered, (get if len(ordered) > 1 else lambda columns: (get(columns),))


def upsert_message(message_id: UUID, event: Envelope, status: MessageStatus | None, **columns: Any) -> Upsert:
    """Insert or update one message row with the columns this event knows."""
    cols = {"org_id": event.org_id, "direction": "outbound", **columns}
    if event.identity_id is not None:
        cols["identity_id"] = event.identity_id
    bound = not STATUS_BOUND.isdisjoint(columns)
    assert status is not None or not bound, "a status-bound column comes with a status"
    return Upsert("messages", message_id, cols, event.occurred_at, event.occurred_at, status, bound)


@functools.cache
def _upsert_message_sql(names: tuple[str, ...], moves_status: bool) -> str:
    """The statement of a message upsert with these columns (a few shapes: made once each)."""
    n = len(names)
    placeholders = ", ".join(f"${i}" for i in range(1, n + 6))

    def bound_to(c: str) -> str:
        return _REPLY_RANK if c in RELAY_REPLY else "messages.status_rank"

    def kept(c: str) -> str:
        if c in STATUS_BOUND:
            return f"{c} = CASE WHEN EXCLUDED.status_rank >= {bound_to(c)} THEN EXCLUDED.{c} ELSE messages.{c} END"
        if c == "labels":  # labels a user changed (MessageFlagsChanged) are theirs from then on
            return "labels = CASE WHEN messages.labels_changed_at IS NULL THEN EXCLUDED.labels ELSE messages.labels END"
        return f"{c} = EXCLUDED.{c}"

    sets = [kept(c) for c in names if c != "direction"]
    status_set = (
        [
            "status = CASE WHEN EXCLUDED.status_rank > messages.status_rank THEN EXCLUDED.status ELSE messages.status END",
            "status_rank = greatest(messages.status_rank, EXCLUDED.status_rank)",
        ]
        if moves_status
        else []
    )
    sql = f"""INSERT INTO messages (id, {", ".join(names)}, status, status_rank, created_at, updated_at)
              VALUES ({placeholders})
              ON CONFLICT (id) DO UPDATE SET {", ".join([*sets, *status_set])},
                  created_at = least(messages.created_at, EXCLUDED.created_at),
                  updated_at = greatest(messages.updated_at, EXCLUDED.updated_at)"""
    SHAPES[sql] = ("messages", ("id", *names, "status", "status_rank", "created_at", "updated_at"))
    return sql


def upsert_conversation(conv_id: UUID, event: Envelope, **columns: Any) -> Upsert:
    """Insert or update one conversation row; a column this event does not know (None) keeps its value."""
    cols = {"org_id": event.org_id, "identity_id": event.identity_id, **columns}
    return Upsert("conversations", conv_id, cols, event.occurred_at, event.occurred_at)


@functools.cache
def _upsert_conversation_sql(names: tuple[str, ...]) -> str:
    n = len(names)
    sets = [f"{c} = coalesce(EXCLUDED.{c}, conversations.{c})" for c in names]
    sql = f"""INSERT INTO conversations (id, {", ".join(names)}, created_at, updated_at)
              VALUES ({", ".join(f"${i}" for i in range(1, n + 4))})
              ON CONFLICT (id) DO UPDATE SET {", ".join(sets)},
                  created_at = least(conversations.created_at, EXCLUDED.created_at),
                  updated_at = greatest(conversations.updated_at, EXCLUDED.updated_at)"""
    SHAPES[sql] = ("conversations", ("id", *names, "created_at", "updated_at"))
    return sql


def relay_reply(reply: SmtpReply | None) -> dict[str, Any]:
    return {"smtp_code": reply.code if reply else None, "smtp_message": reply.message if reply else None}


def body(content: Content, texts: Mapping[str, str]) -> dict[str, Any]:
    """The view's columns for what the sender wrote; `texts`: the bodies kept in the blob store."""
    return {
        "text_body": texts[content.text_blob.sha256] if content.text_blob else content.text,
        "html_body": texts[content.html_blob.sha256] if content.html_blob else content.html,
        "cc_addrs": content.cc,
        "bcc_addrs": content.bcc,
        "labels": content.labels,
        "attachments": [a.model_dump(mode="json") for a in content.attachments],
        "dialect": content.dialect,
        "reply_to": content.reply_to,
    }


# A flag moves only with an event later than the one that last set it, so that two changes commute.
FLAGS = """
UPDATE messages SET
    is_read = CASE WHEN $2::boolean IS NOT NULL AND (read_changed_at IS NULL OR read_changed_at <= $4)
                   THEN $2 ELSE is_read END,
    read_changed_at = CASE WHEN $2::boolean IS NOT NULL THEN greatest(read_changed_at, $4) ELSE read_changed_at END,
    is_starred = CASE WHEN $3::boolean IS NOT NULL AND (starred_changed_at IS NULL OR starred_changed_at <= $4)
                      THEN $3 ELSE is_starred END,
    starred_changed_at = CASE WHEN $3::boolean IS NOT NULL THEN greatest(starred_changed_at, $4)
                              ELSE starred_changed_at END,
    labels = CASE WHEN $5::text[] IS NOT NULL AND (labels_changed_at IS NULL OR labels_changed_at <= $4)
                  THEN $5 ELSE labels END,
    labels_changed_at = CASE WHEN $5::text[] IS NOT NULL THEN greatest(labels_changed_at, $4) ELSE labels_changed_at END,
    updated_at = greatest(updated_at, $4)
WHERE id = $1
"""
DELETE = "UPDATE messages SET deleted_at = least(deleted_at, $2), updated_at = greatest(updated_at, $2) WHERE id = $1"


def statements(event: Envelope, texts: Mapping[str, str] | None = None) -> list[Upsert | Statement]:
    """What one event changes in the views (`texts`: the bodies it refers to in the blob store)."""
    texts = texts or {}
    out: list[Upsert | Statement] = []
    match event:
        case SendRequested(payload=p):
            for m in p.messages:
                out.append(
                    upsert_conversation(
                        m.conv_id, event, counterpart=m.counterpart, subject=p.content.subject
                    )
                )
                out.append(
                    upsert_message(
                        m.message_id,
                        event,
                        None,
                        conv_id=m.conv_id,
                        to_addrs=m.to,
                        subject=p.content.subject,
                        in_reply_to=p.content.in_reply_to,
                        refs=p.content.references,
                        **body(p.content, texts),
                    )
                )
        case ReplyRequested(payload=p):
            out.append(upsert_conversation(p.conv_id, event))
            recipients = {"to_addrs": p.to} if p.to else {}
            out.append(
                upsert_message(
                    p.message_id, event, None, conv_id=p.conv_id, **recipients, **body(p.content, texts)
                )
            )
        case SendAccepted(payload=p):
            out.append(upsert_conversation(p.conv_id, event, mailbox_id=p.mailbox_id))
            out.append(
                upsert_message(
                    p.message_id,
                    event,
                    "queued",
                    conv_id=p.conv_id,
                    mailbox_id=p.mailbox_id,
                    mailbox_email=p.mailbox_email,
                    from_addr=p.from_addr,
                    rfc_message_id=p.rfc_message_id,
                    affinity=p.affinity,
                    to_addrs=p.to,
                    subject=p.content.subject,
                    in_reply_to=p.content.in_reply_to,
                    refs=p.content.references,
                    **body(p.content, texts),
                )
            )
        case SendRejected(payload=p):
            out.append(upsert_message(p.message_id, event, "rejected", reason=p.reason))
        case SendScheduled(payload=p):
            out.append(upsert_message(p.message_id, event, "scheduled"))
        case SendCancelled(payload=p):
            out.append(upsert_message(p.message_id, event, "cancelled", reason=p.reason))
        case DraftCreated(payload=p):
            # Only what no edit changes (statements commute): its content comes with its request, once
            # approved; until then the drafts table shows it.
            for m in p.request["payload"].get("messages") or []:
                out.append(upsert_conversation(UUID(m["conv_id"]), event, counterpart=m["to"][0]))
                out.append(upsert_message(UUID(m["message_id"]), event, "pending_approval", conv_id=UUID(m["conv_id"]),
                                          to_addrs=m["to"]))  # fmt: skip
            if (reply := p.request["payload"]).get("conv_id") and not reply.get("messages"):
                out.append(upsert_message(UUID(reply["message_id"]), event, "pending_approval",
                                          conv_id=UUID(reply["conv_id"])))  # fmt: skip
        case DraftRejected(payload=p):
            out += [upsert_message(m, event, "rejected", reason="draft_rejected") for m in p.message_ids]
        case DraftCancelled(payload=p):
            out += [upsert_message(m, event, "cancelled", reason="requested") for m in p.message_ids]
        case MessageSent(payload=p):
            out.append(
                upsert_message(
                    p.message_id,
                    event,
                    "sent",
                    sent_at=event.occurred_at,
                    reason=None,
                    **relay_reply(p.reply),
                    **({"raw_sha256": p.raw.sha256} if p.raw else {}),
                    **({"to_identity_id": p.delivered_to[0]} if p.delivered_to else {}),
                )
            )
        case DispatchDeferred(payload=p):
            out.append(
                upsert_message(
                    p.message_id,
                    event,
                    "queued",
                    reason=f"deferred (attempt {p.attempt}): {p.reason}",
                    **relay_reply(p.reply),
                )
            )
        case MessageFailed(payload=p):
            out.append(
                upsert_message(
                    p.message_id,
                    event,
                    "failed",
                    reason=p.reason,
                    **relay_reply(p.reply),
                )
            )
        case MessageReceived(payload=p):
            m, new = p.message, p.new_conversation
            out.append(
                upsert_conversation(
                    p.conv_id, event, mailbox_id=p.mailbox_id, counterpart=m.from_addr if new else None,
                    subject=m.content.subject if new else None,
                )
            )  # fmt: skip
            out.append(
                upsert_message(
                    m.message_id, event, "received", direction="inbound", conv_id=p.conv_id,
                    mailbox_id=p.mailbox_id, mailbox_email=p.mailbox_email, from_addr=m.from_addr,
                    to_addrs=m.to, subject=m.content.subject, rfc_message_id=m.rfc_message_id,
                    in_reply_to=m.content.in_reply_to, refs=m.content.references, raw_sha256=m.raw.sha256,
                    auto_reply=m.auto_reply, from_identity_id=m.from_identity_id, reply_text=m.reply_text,
                    authentication=m.authentication.model_dump(),
                    **body(m.content, texts),
                )
            )  # fmt: skip
        case MessageBounced(payload=p) | MessageComplained(payload=p) | MessageDelivered(payload=p):
            status = {"MessageBounced": "bounced", "MessageComplained": "complained"}.get(
                event.type, "delivered"
            )
            detail = f"{p.recipient}: {p.status} {p.diagnostic}".strip()
            out.append(
                upsert_message(p.message_id, event, status, reason=detail if status != "delivered" else None)
            )
        case SuppressionAdded() | SuppressionRemoved():
            out.append((suppressions.SUPPRESS, suppressions.change(event)))
        case MessageFlagsChanged(payload=p):
            out.append((FLAGS, (p.message_id, p.is_read, p.is_starred, event.occurred_at, p.labels)))
        case MessageDeleted(payload=p):
            out.append((DELETE, (p.message_id, event.occurred_at)))
    return out


Groups = dict[str, list[tuple[Any, ...]]]  # statements by shape: each runs with executemany


def plan(events: list[Envelope], texts: Mapping[str, str] | None = None) -> list[Groups]:
    """The events' changes to the views, to run in rounds (each round's groups in any order).

    Each row's upserts fold into one where that is exact (Upsert.merge): a send's three events make
    one message row and one conversation row, not five statements. An upsert that does not fold goes
    to the next round, so a row's statements still run in the events' order. Updates of flags and
    deletes (rows that exist already) and suppressions run last; they commute with the upserts."""
    rows: dict[tuple[str, UUID], list[Upsert]] = {}
    rest: Groups = {}
    for event in events:
        for change in statements(event, texts):
            if isinstance(change, Upsert):
                pending = rows.setdefault((change.table, change.key), [])
                if not (pending and pending[-1].merge(change)):
                    pending.append(change)
            else:
                rest.setdefault(change[0], []).append(change[1])
    rounds: list[Groups] = []
    for pending in rows.values():
        for i, upsert in enumerate(pending):
            if i == len(rounds):
                rounds.append({})
            sql, args = upsert.statement
            rounds[i].setdefault(sql, []).append(args)
    return [*rounds, rest] if rest else rounds


def array_literal(values: list[Any] | None) -> str | None:
    """A list as PostgreSQL's array text (an array column's value in a row passed through unnest, which
    would flatten a list of lists)."""
    if values is None:
        return None
    quoted = ('"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join("NULL" if v is None else q for v, q in zip(values, quoted, strict=True)) + "}"


def set_based(
    groups: Groups, types: Mapping[str, Mapping[str, str]], first: int
) -> tuple[list[str], list[list[Any]]]:
    """One round's upserts as data-modifying CTEs, one per statement shape, each inserting every row of its
    group from unnest() (the same ON CONFLICT clause as the statement): the CTEs and their arguments,
    numbered from `first`. `types`: each table's column types (format_type). A round changes each row at
    most once, so its statements commute, and may run as one."""
    ctes: list[str] = []
    args: list[list[Any]] = []
    for sql, rows in groups.items():
        table, columns = SHAPES[sql]
        params, selects = [], []
        for i, column in enumerate(columns):
            kind = types[table][column]
            values = [r[i] for r in rows]
            n = first + len(args)
            if kind.endswith("[]"):
                args.append([array_literal(v) for v in values])
                params.append(f"${n}::text[]")
                selects.append(f"c{i}::{kind}")
            elif kind in ("jsonb", "json"):
                args.append([None if v is None else json.dumps(v) for v in values])
                params.append(f"${n}::text[]")
                selects.append(f"c{i}::{kind}")
            else:
                args.append(values)
                params.append(f"${n}::{kind}[]")
                selects.append(f"c{i}")
        conflict = sql[sql.index("ON CONFLICT") :]
        ctes.append(
            f"""INSERT INTO {table} ({", ".join(columns)})
                SELECT {", ".join(selects)}
                  FROM unnest({", ".join(params)}) AS u({", ".join(f"c{i}" for i in range(len(columns)))})
                {conflict}"""
        )
    return ctes, args
