"""A batch of requests decided in order, and the state its decisions change: pure functions of the
state decide loaded (services/decide/app.py loads it and writes what these return, in one statement).

`decide_in_order` is (state, requests) -> decisions, each request seeing what the ones before it did
(`advance` folds a decision into the identity's state). `state_writes` derives, from the decisions alone,
the rows that state is kept in: the day's usage, the rolling hour's minutes, the mailbox's day,
affinity pins and conversation threads. Both are driven by unit tests without a broker or a database
(tests/unit/test_decide_batch.py).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

import structlog

from schemas.envelope import Envelope
from schemas.events import (
    CancelRequested,
    MessageArrived,
    MessageReceived,
    ReplyRequested,
    SendAccepted,
    SendCancelled,
    SendCancelledPayload,
    SendRejected,
    SendRequested,
    SendRequestedPayload,
    SendScheduled,
    SendScheduledPayload,
    Timed,
    firing_id,
    recipient_count,
)
from services.common.domain.timezones import local_day_start
from services.decide.affinity import IdentityState, advance, decide_send
from services.decide.received import answers_of, receive, rethreaded, thread_after_received
from services.decide.replies import Thread, decide_reply

log = structlog.get_logger("sendstream.decide")


def thread_after(thread: Thread, decisions: list[Envelope]) -> Thread:
    """A conversation's threading state after an accepted reply in it."""
    for d in decisions:
        if isinstance(d, SendAccepted):
            rfc = d.payload.rfc_message_id
            thread = Thread(
                thread.conv_id, thread.mailbox_id, thread.counterpart, thread.subject, rfc, (*thread.refs, rfc)
            )
    return thread


# A scheduled message's state, as decide keeps it (scheduled_sends.state).
SCHEDULED, CANCELLED, FIRED = "scheduled", "cancelled", "fired"

@dataclass
class Waiting:
    """The scheduled messages a batch names, as decide keeps them, changed in place as it decides:
    each one's state, and (by conversation) those a reply stops (`unless_replied`)."""

    states: dict[UUID, str] = field(default_factory=dict)
    stop_on_reply: dict[UUID, dict[UUID, str]] = field(default_factory=dict)  # conv -> message -> mode

    def add(self, decisions: list[Envelope]) -> None:
        """The messages these decisions schedule wait from now on."""
        for d in decisions:
            if isinstance(d, SendScheduled):
                self.states[d.payload.message_id] = SCHEDULED
                if d.payload.unless_replied:
                    self.stop_on_reply.setdefault(d.payload.conv_id, {})[d.payload.message_id] = d.payload.unless_replied

    def stopped_by(self, arrival: MessageReceived, ours: set[str]) -> list[tuple[UUID, UUID]]:
        """The (message, conversation) of each waiting message the arrival stops, now cancelled: mail from
        anyone but the identity's own mailboxes (`ours`), an auto-reply only where `any` was asked for."""
        m, conv_id = arrival.payload.message, arrival.payload.conv_id
        if m.from_addr.lower() in ours:
            return []
        stopped = [
            i for i, mode in self.stop_on_reply.get(conv_id, {}).items()
            if self.states.get(i) == SCHEDULED and (mode == "any" or not m.auto_reply)
        ]  # fmt: skip
        for i in stopped:
            self.states[i] = CANCELLED
        return [(i, conv_id) for i in stopped]


def schedule(request: Timed, state: IdentityState, thread: Thread | None, now: datetime) -> list[Envelope]:
    """Each message of a request to be made at `send_at`: it waits, and is decided when it fires."""
    p, left = request.payload, max(state.daily_cap - state.used_today, 0)
    if isinstance(p, SendRequestedPayload):
        wanted = [(m.message_id, m.conv_id, m.to) for m in p.messages]
    else:
        wanted = [(p.message_id, p.conv_id, p.to or [thread.counterpart if thread else ""])]
    return [
        SendScheduled(
            **request.caused(occurred_at=now),
            payload=SendScheduledPayload(
                message_id=message_id, conv_id=conv_id, to=to, send_at=p.send_at,
                daily_cap=state.daily_cap, remaining=left, unless_replied=p.unless_replied,
            ),
        )
        for message_id, conv_id, to in wanted
    ]  # fmt: skip


def next_window(now: datetime, timezone: str) -> datetime:
    """The start of the daily cap's next window: the next midnight in the identity's time zone (UTC)."""
    zone = ZoneInfo(timezone)
    tomorrow = now.astimezone(zone).date() + timedelta(days=1)
    return datetime.combine(tomorrow, time(), tzinfo=zone).astimezone(UTC)


def deferred(request: Timed, decisions: list[Envelope], state: IdentityState, now: datetime) -> list[Envelope]:
    """The decisions, with each recipient the daily cap refused scheduled for the cap's next window instead
    where the request asked for that (`on_cap_exceeded: defer`)."""
    p = request.payload
    if p.on_cap_exceeded != "defer":
        return decisions
    at = next_window(now, state.timezone)
    return [
        SendScheduled(
            **request.caused(occurred_at=now),
            payload=SendScheduledPayload(
                message_id=d.payload.message_id, conv_id=d.payload.conv_id, to=d.payload.to, send_at=at,
                daily_cap=d.payload.daily_cap, remaining=d.payload.remaining, unless_replied=p.unless_replied,
                reason="cap_deferred",
            ),
        )
        if isinstance(d, SendRejected) and d.payload.reason == "cap_exceeded" and d.payload.conv_id is not None
        else d
        for d in decisions
    ]  # fmt: skip


def cancel(request: CancelRequested, waiting: Waiting, now: datetime) -> list[Envelope]:
    """A scheduled message still waiting is cancelled; one that fired (or was never scheduled) cannot
    be, and one cancelled already stays so (nothing new is decided either way)."""
    message_id = request.payload.message_id
    if waiting.states.get(message_id) != SCHEDULED:
        return []
    waiting.states[message_id] = CANCELLED
    return [SendCancelled(**request.caused(occurred_at=now), payload=SendCancelledPayload(message_id=message_id))]


def waits(request: Envelope, now: datetime) -> bool:
    """A request whose time has not come: it is scheduled, not decided."""
    return (
        isinstance(request, Timed)
        and not request.payload.fired
        and request.payload.send_at is not None
        and request.payload.send_at > now
    )


def decide_in_order(
    fresh: list[Envelope],
    states: dict[UUID, IdentityState],
    threads: dict[UUID, Thread],
    answered: dict[UUID, UUID],
    now: datetime,
    waiting: Waiting | None = None,
) -> dict[UUID, list[Envelope]]:
    """Each request's decisions, by event id, in order: each sees the state (`states`, `threads`,
    `waiting`: the scheduled messages the batch names, changed in place) the ones before it left.
    `answered`: the conversation each arrival replies to, by its event id, as the stored threads say.

    A scheduled message's firing, its cancel and mail arriving in its conversation all come on the
    identity's partition, in one order: whichever is decided first wins. A firing is decided as the
    request would have been, had it come then."""
    waiting = Waiting() if waiting is None else waiting
    decided: dict[UUID, list[Envelope]] = {}
    # (identity, Message-ID) -> conversation, of the threads this batch moved on: an arrival answering
    # a message decided just before it in the batch joins that one's conversation
    moved: dict[tuple[UUID, str], UUID] = {}
    for e in fresh:
        state = states.get(e.identity_id) or IdentityState(e.identity_id, "", 0, 0, (), active=False)
        thread = threads.get(e.payload.conv_id) if isinstance(e, ReplyRequested) else None
        if waits(e, now) and (isinstance(e, SendRequested) or thread is not None):
            decisions = schedule(e, state, thread, now)
        elif isinstance(e, Timed) and e.payload.fired and waiting.states.get(e.payload.message_ids[0]) != SCHEDULED:
            decisions = []  # cancelled (or fired) before
        elif isinstance(e, SendRequested):
            decisions = deferred(e, decide_send(e, state, now), state, now)
        elif isinstance(e, CancelRequested):
            decisions = cancel(e, waiting, now)
        elif isinstance(e, ReplyRequested):
            decisions = deferred(e, decide_reply(e, state, thread, now), state, now)
            if thread is not None:
                threads[thread.conv_id] = thread = thread_after(thread, decisions)
                moved |= {(e.identity_id, ref): thread.conv_id for ref in thread.refs}
        elif isinstance(e, MessageArrived):
            in_batch = next((c for a in answers_of(e) if (c := moved.get((e.identity_id, a)))), None)
            e = rethreaded(e, in_batch or answered.get(e.event_id))
            decisions = receive(e, state, threads.get(e.payload.conv_id), now)
            if (thread := thread_after_received(threads.get(e.payload.conv_id), decisions)) is not None:
                threads[thread.conv_id] = thread
                moved |= {(e.identity_id, ref): thread.conv_id for ref in thread.refs}
            ours = {mb.email.lower() for mb in state.mailboxes}
            decisions += [
                SendCancelled(**e.caused(occurred_at=now),
                              payload=SendCancelledPayload(message_id=i, conv_id=c, reason="replied"))
                for d in decisions if isinstance(d, MessageReceived) for i, c in waiting.stopped_by(d, ours)
            ]  # fmt: skip
        else:
            log.warning("request type not handled yet", type=e.type)
            decisions = []
        if isinstance(e, Timed) and e.payload.fired and decisions:
            waiting.states[e.payload.message_ids[0]] = FIRED  # or (deferred again) scheduled, just below
        waiting.add(decisions)
        states[e.identity_id] = advance(state, decisions)
        decided[e.event_id] = decisions
    return decided


@dataclass
class StateWrites:
    """The rows the decisions of a batch change, each key once, summed where they add up."""

    usage: Counter[tuple[UUID, object]] = field(default_factory=Counter)  # (identity, local day) -> recipients
    minutes: Counter[tuple[UUID, datetime]] = field(default_factory=Counter)  # (mailbox, minute) -> recipients
    days: dict[tuple[UUID, object], tuple[int, datetime]] = field(default_factory=dict)  # -> (recipients, last)
    pins: dict[tuple[UUID, str], tuple[UUID, datetime]] = field(default_factory=dict)  # (identity, to) -> (mailbox, at)
    threads: dict[UUID, tuple] = field(default_factory=dict)  # conversation -> its binding and last message
    # scheduled message -> (org, identity, send_at, its state: SCHEDULED, CANCELLED or FIRED, and when
    # scheduled its conversation, recipients, subject and what stops it)
    scheduled: dict[UUID, tuple] = field(default_factory=dict)
    timers: dict[UUID, tuple[datetime, Envelope]] = field(default_factory=dict)  # a scheduled message's firing

    def columns(self) -> list[list]:
        """Per-column lists for the statement's unnest() parameters $1 to $23 (services/decide/app.py)."""
        return [
            *columns([(*k, n) for k, n in self.usage.items()], 3),
            *columns([(*k, n) for k, n in self.minutes.items()], 3),
            *columns([(*k, n, last) for k, (n, last) in self.days.items()], 4),
            *columns([(*k, m, at) for k, (m, at) in self.pins.items()], 4),
            *columns([(conv, *rest) for conv, rest in self.threads.items()], 9),
        ]

    def scheduling_columns(self) -> list[list]:
        """Per-column lists for $27 to $38: the scheduled messages' states, and the timers that fire them
        (the scheduler watches a firing once it published it: services/scheduler/app.py)."""
        return [
            *columns([(m, *rest[:5], json.dumps(rest[5]), *rest[6:]) for m, rest in self.scheduled.items()], 9),
            *columns([(i, due, e.model_dump(mode="json")) for i, (due, e) in self.timers.items()], 3),
        ]


def columns(rows: list[tuple], width: int) -> list[list]:
    """Rows to per-column lists for unnest(): `width` lists, empty when there are no rows."""
    return [list(c) for c in zip(*rows, strict=True)] or [[] for _ in range(width)]


def firing(request: Timed, message_id: UUID, send_at: datetime) -> Timed:
    """The request of one scheduled message as its timer publishes it at `send_at`: the same request,
    that message alone, marked `fired`, under an id of its own (so a timer published twice is one, and a
    message deferred again fires anew)."""
    update = {"event_id": firing_id(message_id, send_at), "payload": request.payload.firing(message_id)}
    return request.model_copy(update=update)


def state_writes(
    decided: dict[UUID, list[Envelope]],
    timezones: dict[UUID, str],
    requests: Mapping[UUID, Envelope] | None = None,
) -> StateWrites:
    """What these decisions change of decide's state: usage in each identity's local day (`timezones`),
    the mailboxes' minutes and days, the pins of new and reassigned recipients, the conversations'
    threads (bound to their mailbox; the next reply answers their last message), and the scheduled
    messages with the timers that fire them (`requests`: the batch's requests by event id)."""
    w = StateWrites()
    for request_id, decisions in decided.items():
        request = (requests or {}).get(request_id)
        fired = isinstance(request, Timed) and request.payload.fired
        for e in decisions:
            if isinstance(e, SendScheduled) and isinstance(request, Timed):
                p = e.payload
                w.scheduled[p.message_id] = (
                    e.org_id, e.identity_id, p.send_at, SCHEDULED, p.conv_id, p.to, request.payload.content.subject,
                    p.unless_replied,
                )  # fmt: skip
                fire = firing(request, p.message_id, p.send_at)
                w.timers[fire.event_id] = (p.send_at, fire)
            elif isinstance(e, SendCancelled):
                w.scheduled[e.payload.message_id] = (e.org_id, e.identity_id, None, CANCELLED, None, [], "", None)
            elif fired and isinstance(e, SendAccepted | SendRejected):
                w.scheduled[e.payload.message_id] = (e.org_id, e.identity_id, None, FIRED, None, [], "", None)
    for e in (d for ds in decided.values() for d in ds):
        if isinstance(e, MessageReceived) and e.payload.mailbox_id is not None:
            # A conversation it starts is bound to its mailbox; in any, the next reply answers it.
            m = e.payload.message
            refs = json.dumps([*m.content.references, m.rfc_message_id])
            w.threads[e.payload.conv_id] = (
                e.org_id, e.identity_id, e.payload.mailbox_id, m.from_addr, m.content.subject,
                m.rfc_message_id, refs, e.occurred_at,
            )  # fmt: skip
        if not isinstance(e, SendAccepted):
            continue
        p, at = e.payload, e.occurred_at
        n = recipient_count(p.to, p.content)  # caps and limits count every recipient
        day = local_day_start(at, timezones.get(e.identity_id, "UTC")).date()
        w.usage[(e.identity_id, day)] += n
        w.minutes[(p.mailbox_id, at.replace(second=0, microsecond=0))] += n
        sent, last = w.days.get((p.mailbox_id, day), (0, at))
        w.days[(p.mailbox_id, day)] = (sent + n, max(last, at))
        if p.affinity != "existing":  # a new pin, or a re-pin; replies and reuse leave the pin as it is
            w.pins[(e.identity_id, p.to[0].lower())] = (p.mailbox_id, at)
        refs = json.dumps([*p.content.references, p.rfc_message_id])
        w.threads[p.conv_id] = (
            e.org_id, e.identity_id, p.mailbox_id, p.to[0], p.content.subject, p.rfc_message_id, refs, at,
        )  # fmt: skip
    return w
