"""Carrying out a send command: the request event, publishing it, waiting (bounded) for decide, the
outcome. The only place that does, for every dialect.

Every id a request creates derives from the `IdSource` under fixed labels ("event", "message:{i}",
"conversation:{i}"), so a retry with the same Idempotency-Key, through any dialect, repeats them and
the consumers drop the copy.
"""

from __future__ import annotations

from uuid import UUID

import asyncpg
import structlog

from schemas.commands import Command, MessageOutcome, NewSend, Outcome
from schemas.envelope import Envelope
from schemas.events import (
    DraftCreated,
    DraftPayload,
    Origin,
    ReplyRequested,
    ReplyRequestedPayload,
    RequestedMessage,
    SendRequested,
    SendRequestedPayload,
)
from services.common.domain import bodies, redrive
from services.common.domain.decided import Answer
from services.ingress.context import Context, MaybePublished
from services.ingress.core import attachments, directory
from services.ingress.core.outcome import outcome_of
from services.ingress.idempotency import IdSource

log = structlog.get_logger("sendstream.ingress.send")


def request_event(
    cmd: Command, identity: asyncpg.Record, new: IdSource, correlation_id: str, origin: Origin | None = None
) -> tuple[list[RequestedMessage], Envelope]:
    """The messages a command asks for, and the *Requested event that asks for them. Pure."""
    common = {
        "event_id": new("event"),
        "org_id": identity["org_id"],
        "identity_id": identity["id"],
        "correlation_id": correlation_id,
    }
    if isinstance(cmd, NewSend):
        wanted = [
            RequestedMessage(message_id=new(f"message:{i}"), conv_id=new(f"conversation:{i}"), to=to)
            for i, to in enumerate(cmd.messages)
        ]
        payload = SendRequestedPayload(
            handle=identity["handle"], messages=wanted, content=cmd.content, origin=origin, send_at=cmd.send_at,
            unless_replied=cmd.unless_replied, on_cap_exceeded=cmd.on_cap_exceeded,
        )  # fmt: skip
        return wanted, SendRequested(**common, payload=payload)
    wanted = [
        RequestedMessage(message_id=new("message:0"), conv_id=cmd.conv_id, to=cmd.recipients or [cmd.to])
    ]
    payload = ReplyRequestedPayload(
        handle=identity["handle"],
        message_id=wanted[0].message_id,
        conv_id=cmd.conv_id,
        content=cmd.content,
        to=cmd.recipients,
        origin=origin,
        send_at=cmd.send_at,
        unless_replied=cmd.unless_replied,
        on_cap_exceeded=cmd.on_cap_exceeded,
        answering=cmd.answering,
    )
    return wanted, ReplyRequested(**common, payload=payload)


async def submit(
    c: Context,
    cmd: Command,
    identity: asyncpg.Record,
    new: IdSource,
    files: dict[str, bytes] | None = None,
    *,
    correlation_id: str,
    origin: Origin | None = None,
) -> Outcome:
    """Store the command's attached files (`files`: their bytes by hash) and its large bodies, publish
    its request and wait (at most `decision_timeout_s`) for decide's answers.

    A request answered before it was decided (`queued`) is watched until it is: should its event be
    lost with the log, it is published again (services/common/domain/redrive.py)."""
    if cmd.content.forwarded is None:  # a forward's bodies carry the original's: the composed size holds it
        attachments.check_bodies(cmd.content, c.settings.max_body_bytes)
    to = cmd.messages[0] if isinstance(cmd, NewSend) else cmd.recipients or [cmd.to]
    attachments.check_composed(identity["handle"], to, cmd.content, files or {})
    if files:
        await attachments.store(c.blobs, cmd.content.attachments, files, identity["org_id"])
    content = await bodies.offload(
        c.blobs, cmd.content, c.settings.body_inline_max_bytes, [identity["org_id"]]
    )
    wanted, request = request_event(
        cmd.model_copy(update={"content": content}), identity, new, correlation_id, origin
    )
    message_ids = [m.message_id for m in wanted]
    if cmd.draft or identity["require_approval"]:
        draft_id = await hold(c, identity, request, wanted, new, origin)
        held = [MessageOutcome(m.message_id, m.conv_id, m.to, "pending_approval", draft_id=draft_id) for m in wanted]
        return Outcome(held, identity["daily_cap"], await directory.remaining_today(c, identity))
    with c.admission.waiting():  # how far behind the pipeline is: services/ingress/admission.py
        answers = await publish_and_wait(c, request, message_ids, new)
    if answers is None:
        return outcome_of(wanted, [], identity["daily_cap"], None)
    # From here on the request is on the log: nothing may turn its answer into an error.
    if len(answers) < len(message_ids):
        try:
            await redrive.watch_undecided(c.pool, request, message_ids, c.settings.redrive_after_s)
        except Exception as exc:  # the request is on the log: answer as queued all the same
            log.error("could not watch an undecided request", error=repr(exc))
    remaining = None
    if not answers:
        try:
            remaining = await directory.remaining_today(c, identity)
        except Exception as exc:
            log.warning("could not read the day's usage for a queued answer", error=repr(exc))
    return outcome_of(wanted, answers, identity["daily_cap"], remaining)


async def hold(
    c: Context, identity: asyncpg.Record, request: Envelope, wanted: list[RequestedMessage], new: IdSource,
    origin: Origin | None,
) -> UUID:
    """Keep `request` as a draft a person approves (SPEC 3.5) instead of publishing it; its id. A retry
    under the same Idempotency-Key finds the draft it made."""
    draft_id = new("draft")
    async with directory.change(c) as (conn, facts):
        made = await conn.fetchval(
            """INSERT INTO drafts (id, org_id, identity_id, status, request, message_ids, wanted, dialect, created_by)
               VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING RETURNING true""",
            draft_id, identity["org_id"], identity["id"], request.model_dump(mode="json"),
            [m.message_id for m in wanted], [m.model_dump(mode="json") for m in wanted],
            request.payload.content.dialect, origin and origin.api_key_id,
        )  # fmt: skip
        if made:
            facts.append(
                DraftCreated(
                    org_id=identity["org_id"], identity_id=identity["id"], correlation_id=request.correlation_id,
                    payload=DraftPayload(
                        draft_id=draft_id, status="pending", message_ids=[m.message_id for m in wanted],
                        request=request.model_dump(mode="json"), by=origin and origin.api_key_id,
                    ),
                )
            )  # fmt: skip
    return draft_id


async def publish_and_wait(
    c: Context, request: Envelope, message_ids: list[UUID], new: IdSource
) -> list[Answer] | None:
    """Publish the request and wait (at most `decision_timeout_s`) for decide's answers; None if the log
    did not confirm it in time (it is then watched, to be published again should it not be there)."""
    c.waiter.expect(request.event_id)
    try:
        await c.publish([request])
    except MaybePublished as unsure:  # it may be on the log: it must be sent once, whatever happens
        c.waiter.forget(request.event_id)
        try:
            await redrive.watch_undecided(c.pool, request, message_ids, c.settings.redrive_after_s)
        except Exception as exc:
            log.error("could not watch an unconfirmed request", error=repr(exc))
            raise MaybePublished(unsure.cause, _unknown(new)) from exc
        log.warning("request not confirmed by the log in time: answered queued", error=repr(unsure.cause))
        return None
    except BaseException:
        c.waiter.forget(request.event_id)
        raise
    if new.repeated:  # decided after an earlier attempt already: no notification will come
        c.waiter.look(request.event_id)
    return await c.waiter.wait(request.event_id, c.settings.decision_timeout_s)


def _unknown(new: IdSource) -> str:
    """What a client is told when not even the ingress knows whether its send went onto the log."""
    if new.seed:
        return (
            "the send may have been accepted, but the event log did not confirm it: retry with the same "
            "Idempotency-Key, which repeats this request and never makes a second send"
        )
    return (
        "the send may have been accepted, but the event log did not confirm it: do not retry blindly, look "
        "for the message first (and send an Idempotency-Key, which makes retries safe)"
    )
