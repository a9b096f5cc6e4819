"""`Sendstream` (sync) and `AsyncSendstream`: one method per route of the identities dialect and the
shared routes. Every method is written once (`_Operations`): it describes its request (`Call`), and each
client carries it out, the sync one at once, the async one as an awaitable. So the async client's methods
return what the sync one's do, to be awaited.

- Every send (send, reply, a draft's approval) carries an `Idempotency-Key`: the one given, else a new
  one. A retry reuses it, so a send retried after a lost answer is never made twice.
- 429 and 503 with `Retry-After` are retried after it (at most `max_retries` times, waits up to
  `max_wait_s`), as are network errors and a 503 `outcome_unknown` on a request with a key; then the
  typed error (sendstream_client.errors) is raised.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from sendstream_client import models as m
from sendstream_client.errors import Conflict, OutcomeUnknown, SendstreamError, error_for

DEFAULT_URL = "http://127.0.0.1:8080"


def _p(part: str) -> str:
    """A path segment: an address or id as it is, anything that would end the segment escaped."""
    return quote(part, safe="@+")


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@dataclass
class Call:
    """One request, and what its answer is read as (`model`; None: no body)."""

    method: str
    path: str
    model: type[BaseModel] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    idempotency_key: str | None = None

    def headers(self, api_key: str) -> dict[str, str]:
        key = {"Idempotency-Key": self.idempotency_key} if self.idempotency_key else {}
        return {"Authorization": f"Bearer {api_key}", **key}

    def read(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            if response.status_code == 429 and self.model is not None and isinstance(body, dict) and "messages" in body:
                return self.model.model_validate(body)  # a send whose every recipient was refused: its answer
            raise error_for(response.status_code, body, retry_after(response))
        return self.model.model_validate(response.json()) if self.model else None


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _send_body(
    to: str | list[str] | None, subject: str | None, text: str | None, html: str | None, conv_id: str | None,
    send_at: str | None, timezone: str | None, unless_replied: bool | str | None, on_cap_exceeded: str | None,
    unsubscribe: bool | None,
) -> dict[str, Any]:  # fmt: skip
    return _drop_none(
        {
            "to": to, "subject": subject, "text": text, "html": html, "convId": conv_id, "sendAt": send_at,
            "timezone": timezone, "unlessReplied": unless_replied, "onCapExceeded": on_cap_exceeded,
            "unsubscribe": unsubscribe,
        }
    )  # fmt: skip


class _Operations:
    """The API's operations, each described once; `_run` carries one out (sync, or as an awaitable)."""

    def _run(self, call: Call) -> Any:
        raise NotImplementedError

    # --- identities and their mailboxes --------------------------------------------------------------

    def list_identities(self) -> m.IdentityList:
        return self._run(Call("GET", "/v1/identities", m.IdentityList))

    def get_identity(self, handle: str) -> m.Identity:
        return self._run(Call("GET", f"/v1/identities/{_p(handle)}", m.Identity))

    def create_identity(self, handle: str, *, daily_cap: int | None = None, timezone: str | None = None) -> m.Identity:
        body = _drop_none({"handle": handle, "dailyCap": daily_cap, "timezone": timezone})
        return self._run(Call("POST", "/v1/identities", m.Identity, body=body))

    def update_identity(
        self, handle: str, *, daily_cap: int | None = None, timezone: str | None = None,
        require_approval: bool | None = None,
    ) -> m.Identity:  # fmt: skip
        body = _drop_none({"dailyCap": daily_cap, "timezone": timezone, "requireApproval": require_approval})
        return self._run(Call("PATCH", f"/v1/identities/{_p(handle)}", m.Identity, body=body))

    def delete_identity(self, handle: str) -> None:
        return self._run(Call("DELETE", f"/v1/identities/{_p(handle)}"))

    def add_mailbox(
        self, handle: str, email: str, smtp: dict[str, Any], *, imap: dict[str, Any] | None = None,
        hourly_limit: int | None = None, daily_limit: int | None = None, warmup: dict[str, Any] | None = None,
    ) -> m.Mailbox:  # fmt: skip
        """Add a mailbox to the identity's pool. `smtp`: host, port, tls, username, password (the API's
        names); `imap` the same, for replies to be read from it."""
        body = _drop_none(
            {"email": email, "smtp": smtp, "imap": imap, "hourlyLimit": hourly_limit, "dailyLimit": daily_limit,
             "warmup": warmup}
        )  # fmt: skip
        return self._run(Call("POST", f"/v1/identities/{_p(handle)}/mailboxes", m.Mailbox, body=body))

    def list_mailboxes(self, handle: str) -> m.MailboxList:
        return self._run(Call("GET", f"/v1/identities/{_p(handle)}/mailboxes", m.MailboxList))

    def get_mailbox(self, handle: str, mailbox_id: str) -> m.Mailbox:
        return self._run(Call("GET", f"/v1/identities/{_p(handle)}/mailboxes/{_p(mailbox_id)}", m.Mailbox))

    def update_mailbox(self, handle: str, mailbox_id: str, **changes: Any) -> m.Mailbox:
        """Change what is given, in the API's names (`health`, `hourlyLimit`, `dailyLimit`, `smtp`, ...)."""
        return self._run(Call("PATCH", f"/v1/identities/{_p(handle)}/mailboxes/{_p(mailbox_id)}", m.Mailbox, body=changes))

    def remove_mailbox(self, handle: str, mailbox_id: str) -> None:
        return self._run(Call("DELETE", f"/v1/identities/{_p(handle)}/mailboxes/{_p(mailbox_id)}"))

    # --- sending ---------------------------------------------------------------------------------------

    def send(
        self, identity: str, to: str | list[str], subject: str, *, text: str | None = None, html: str | None = None,
        send_at: str | None = None, timezone: str | None = None, unless_replied: bool | str | None = None,
        on_cap_exceeded: str | None = None, unsubscribe: bool | None = None, idempotency_key: str | None = None,
    ) -> m.SendResponse:  # fmt: skip
        """A new conversation with each address of `to` (sent from the identity's pool). `send_at`: later
        (RFC 3339, or local with `timezone`); `unless_replied`: a later send cancelled by a reply first."""
        body = _send_body(to, subject, text, html, None, send_at, timezone, unless_replied, on_cap_exceeded, unsubscribe)
        key = idempotency_key or str(uuid.uuid4())
        return self._run(Call("POST", f"/v1/identities/{_p(identity)}/send", m.SendResponse, body=body, idempotency_key=key))

    def reply(
        self, identity: str, conv_id: str, *, text: str | None = None, html: str | None = None,
        send_at: str | None = None, timezone: str | None = None, unless_replied: bool | str | None = None,
        on_cap_exceeded: str | None = None, idempotency_key: str | None = None,
    ) -> m.SendResponse:  # fmt: skip
        """A reply in the conversation, from the mailbox it has used (threaded by In-Reply-To)."""
        body = _send_body(None, None, text, html, conv_id, send_at, timezone, unless_replied, on_cap_exceeded, None)
        key = idempotency_key or str(uuid.uuid4())
        return self._run(Call("POST", f"/v1/identities/{_p(identity)}/send", m.SendResponse, body=body, idempotency_key=key))

    def get_conversation(self, conv_id: str) -> m.Conversation:
        return self._run(Call("GET", f"/v1/conversations/{_p(conv_id)}", m.Conversation))

    def list_conversations(
        self, identity: str | None = None, *, cursor: str | None = None, limit: int | None = None
    ) -> m.ConversationList:
        """The identity's (None: every identity's) conversations with their messages, most recently active first."""
        params = _drop_none({"identity": identity, "cursor": cursor, "limit": limit})
        return self._run(Call("GET", "/v1/conversations", m.ConversationList, params=params))

    def search_messages(self, identity: str | None, q: str, *, limit: int | None = None) -> m.MessageSearch:
        """The identity's (None: every identity's) messages matching every word of `q` (the last one as a
        prefix), best first."""
        params = _drop_none({"identity": identity, "q": q, "limit": limit})
        return self._run(Call("GET", "/v1/messages", m.MessageSearch, params=params))

    def get_message(self, message_id: str) -> m.MessageDetail:
        """A message of any identity, with signed links to its files and raw source (valid 15 minutes)."""
        return self._run(Call("GET", f"/v1/messages/{_p(message_id)}", m.MessageDetail))

    def message_events(self, message_id: str) -> m.AuditTrail:
        """A message's audit trail: every event of its life, in order."""
        return self._run(Call("GET", f"/v1/messages/{_p(message_id)}/events", m.AuditTrail))

    def cancel(self, message_id: str) -> m.Cancelled:
        """Cancel a scheduled send (or one held in a draft); Conflict once it went out."""
        return self._run(Call("POST", f"/v1/messages/{_p(message_id)}/cancel", m.Cancelled))

    def list_scheduled(
        self, *, identity: str | None = None, cursor: str | None = None, limit: int | None = None
    ) -> m.ScheduledList:
        params = _drop_none({"identity": identity, "cursor": cursor, "limit": limit})
        return self._run(Call("GET", "/v1/scheduled", m.ScheduledList, params=params))

    # --- drafts ----------------------------------------------------------------------------------------

    def create_draft(
        self, identity: str, to: str | list[str] | None = None, subject: str | None = None, *, conv_id: str | None = None,
        text: str | None = None, html: str | None = None, send_at: str | None = None, timezone: str | None = None,
        idempotency_key: str | None = None,
    ) -> m.Draft:  # fmt: skip
        """A send (or, with `conv_id`, a reply) kept for a person to approve: nothing goes out until then."""
        body = _send_body(to, subject, text, html, conv_id, send_at, timezone, None, None, None)
        key = idempotency_key or str(uuid.uuid4())
        return self._run(Call("POST", f"/v1/identities/{_p(identity)}/drafts", m.Draft, body=body, idempotency_key=key))

    def list_drafts(
        self, *, status: str | None = None, identity: str | None = None, cursor: str | None = None,
        limit: int | None = None,
    ) -> m.DraftList:  # fmt: skip
        params = _drop_none({"status": status, "identity": identity, "cursor": cursor, "limit": limit})
        return self._run(Call("GET", "/v1/drafts", m.DraftList, params=params))

    def get_draft(self, draft_id: str) -> m.Draft:
        return self._run(Call("GET", f"/v1/drafts/{_p(draft_id)}", m.Draft))

    def update_draft(
        self, draft_id: str, *, subject: str | None = None, text: str | None = None, html: str | None = None,
        send_at: str | None = None, timezone: str | None = None,
    ) -> m.Draft:  # fmt: skip
        body = _drop_none({"subject": subject, "text": text, "html": html, "sendAt": send_at, "timezone": timezone})
        return self._run(Call("PATCH", f"/v1/drafts/{_p(draft_id)}", m.Draft, body=body))

    def approve_draft(self, draft_id: str, *, if_updated_at: str | None = None) -> m.ApprovedDraft:
        """Send it (once, however often approved); needs an admin key or the `approve` scope. With
        `if_updated_at` (the draft's `updated_at` as reviewed), Conflict if it was edited since."""
        body = _drop_none({"ifUpdatedAt": if_updated_at})
        return self._run(Call("POST", f"/v1/drafts/{_p(draft_id)}/approve", m.ApprovedDraft, body=body))

    def reject_draft(self, draft_id: str, reason: str) -> m.Draft:
        return self._run(Call("POST", f"/v1/drafts/{_p(draft_id)}/reject", m.Draft, body={"reason": reason}))

    # --- the event feed --------------------------------------------------------------------------------

    def list_events(
        self, *, after: str | None = None, types: list[str] | None = None, limit: int | None = None
    ) -> m.EventPage:
        """A page of the organization's events after the cursor `after` (from the start if None)."""
        params = _drop_none({"after": after, "types": ",".join(types) if types else None, "limit": limit})
        return self._run(Call("GET", "/v1/events", m.EventPage, params=params))

    def wait_for_message(self, inbox: str, *, after: str | None = None, timeout: int = 25) -> m.WaitResult:
        """The next message the inbox (an identity's handle or an inbox id) receives after the cursor
        `after` (by default: from now), waiting at most `timeout` seconds (up to 30); `message` is None
        if none came. Its `cursor` is where to wait from next."""
        params = _drop_none({"inbox": inbox, "after": after, "timeout": timeout})
        return self._run(Call("GET", "/v1/messages/wait", m.WaitResult, params=params))

    # --- suppressions ----------------------------------------------------------------------------------

    def list_suppressions(self, *, cursor: str | None = None, limit: int | None = None) -> m.SuppressionList:
        return self._run(Call("GET", "/v1/suppressions", m.SuppressionList, params=_drop_none({"cursor": cursor, "limit": limit})))

    def get_suppression(self, address: str) -> m.Suppression:
        return self._run(Call("GET", f"/v1/suppressions/{_p(address)}", m.Suppression))

    def suppress(self, address: str, reason: str | None = None) -> m.Suppression:
        """Never mail the address again (from the moment this answers)."""
        body = _drop_none({"address": address, "reason": reason})
        return self._run(Call("POST", "/v1/suppressions", m.Suppression, body=body))

    def unsuppress(self, address: str) -> None:
        return self._run(Call("DELETE", f"/v1/suppressions/{_p(address)}"))

    # --- webhooks --------------------------------------------------------------------------------------

    def create_webhook(self, url: str, events: list[str], *, description: str | None = None) -> m.WebhookCreated:
        """Register an endpoint; the answer carries its signing secret, shown only here (and on rotation)."""
        body = _drop_none({"url": url, "events": events, "description": description})
        return self._run(Call("POST", "/v1/webhooks", m.WebhookCreated, body=body))

    def list_webhooks(self) -> m.WebhookList:
        return self._run(Call("GET", "/v1/webhooks", m.WebhookList))

    def get_webhook(self, webhook_id: str) -> m.Webhook:
        return self._run(Call("GET", f"/v1/webhooks/{_p(webhook_id)}", m.Webhook))

    def update_webhook(
        self, webhook_id: str, *, url: str | None = None, events: list[str] | None = None,
        description: str | None = None, enabled: bool | None = None,
    ) -> m.Webhook:  # fmt: skip
        body = _drop_none({"url": url, "events": events, "description": description, "enabled": enabled})
        return self._run(Call("PATCH", f"/v1/webhooks/{_p(webhook_id)}", m.Webhook, body=body))

    def delete_webhook(self, webhook_id: str) -> None:
        return self._run(Call("DELETE", f"/v1/webhooks/{_p(webhook_id)}"))

    def list_deliveries(
        self, webhook_id: str, *, message_id: str | None = None, cursor: str | None = None, limit: int | None = None
    ) -> m.DeliveryList:
        params = _drop_none({"messageId": message_id, "cursor": cursor, "limit": limit})
        return self._run(Call("GET", f"/v1/webhooks/{_p(webhook_id)}/deliveries", m.DeliveryList, params=params))

    def retry_delivery(self, webhook_id: str, delivery_id: str) -> m.Delivery:
        return self._run(Call("POST", f"/v1/webhooks/{_p(webhook_id)}/deliveries/{_p(delivery_id)}/retry", m.Delivery))

    def rotate_webhook_secret(self, webhook_id: str) -> m.SecretRotated:
        return self._run(Call("POST", f"/v1/webhooks/{_p(webhook_id)}/rotate-secret", m.SecretRotated))

    def test_webhook(self, webhook_id: str) -> m.Delivery:
        return self._run(Call("POST", f"/v1/webhooks/{_p(webhook_id)}/test", m.Delivery))


def _settings(base_url: str | None, api_key: str | None) -> tuple[str, str]:
    url = (base_url or os.environ.get("SENDSTREAM_API_URL") or DEFAULT_URL).rstrip("/")
    key = api_key or os.environ.get("SENDSTREAM_API_KEY")
    if not key:
        raise ValueError("api_key: pass one, or set SENDSTREAM_API_KEY")
    return url, key


def _retryable(call: Call, error: Exception) -> float | None:
    """How long to wait before trying `call` again after `error` (None: do not)."""
    if isinstance(error, httpx.TransportError):
        return 0.5 if call.method == "GET" or call.idempotency_key else None
    if isinstance(error, OutcomeUnknown) or (isinstance(error, Conflict) and error.type == "idempotency_in_progress"):
        return 0.5 if call.idempotency_key else None  # the first attempt is still being carried out
    if isinstance(error, SendstreamError) and error.status in (429, 503):
        return error.retry_after
    return None


def _sse(lines: Iterator[str] | list[str], pending: dict[str, str]) -> Iterator[m.FeedEvent]:
    """Server-Sent Events lines into feed events (`pending` holds a half-read event between chunks)."""
    for line in lines:
        if line == "":
            data = pending.pop("data", None)
            kind = pending.pop("event", None)
            pending.clear()
            if data is not None and kind != "error":
                yield m.FeedEvent.model_validate(json.loads(data))
            elif kind == "error":
                raise error_for(401, {"error": json.loads(data or "{}")}, None)
        elif not line.startswith(":") and ":" in line:
            name, _, value = line.partition(":")
            pending[name] = pending.get(name, "") + value.removeprefix(" ")


class Sendstream(_Operations):
    """The sync client. `base_url` and `api_key` default to SENDSTREAM_API_URL and SENDSTREAM_API_KEY."""

    def __init__(
        self, base_url: str | None = None, api_key: str | None = None, *, timeout: float = 40.0,
        max_retries: int = 3, max_wait_s: float = 30.0, http: httpx.Client | None = None,
    ):  # fmt: skip
        self.base_url, api_key = _settings(base_url, api_key)
        self.max_retries, self.max_wait_s = max_retries, max_wait_s
        self._api_key = api_key
        self._http = http or httpx.Client(base_url=self.base_url, timeout=timeout)

    def __enter__(self) -> Sendstream:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: Call) -> Any:
        for attempt in range(self.max_retries + 1):
            try:
                response = self._http.request(
                    call.method, call.path, params=call.params, json=call.body, headers=call.headers(self._api_key)
                )
                return call.read(response)
            except (httpx.TransportError, SendstreamError) as error:
                wait = _retryable(call, error)
                if wait is None or wait > self.max_wait_s or attempt == self.max_retries:
                    raise
                time.sleep(wait)
        raise AssertionError("unreachable")

    def each(self, list_method: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """Every item of a list method that pages by cursor (`list_drafts`, `list_suppressions`,
        `list_scheduled`, `list_conversations`, `list_deliveries`), page after page:
        `for draft in mail.each(mail.list_drafts, status="pending"): ...`"""
        cursor = None
        while True:
            page = list_method(*args, **kwargs, cursor=cursor)
            yield from page.data
            if not page.has_more:
                return
            cursor = page.next_cursor

    def iter_events(self, *, after: str | None = None, types: list[str] | None = None) -> Iterator[m.FeedEvent]:
        """Every event after `after`, page by page, until the feed has no more (for now)."""
        while True:
            page = self.list_events(after=after, types=types, limit=100)
            yield from page.data
            after = page.next_cursor
            if not page.has_more:
                return

    def stream_events(self, *, after: str | None = None, types: list[str] | None = None) -> Iterator[m.FeedEvent]:
        """The organization's events as they happen (from `after`, else from now), without end."""
        params = _drop_none({"after": after, "types": ",".join(types) if types else None})
        headers = Call("GET", "").headers(self._api_key)
        with self._http.stream("GET", "/v1/events/stream", params=params, headers=headers, timeout=None) as response:
            if response.status_code >= 400:
                response.read()
                Call("GET", "").read(response)  # raises the typed error
            yield from _sse(response.iter_lines(), {})

    def wait_for_reply(
        self, *, conversation: str | None = None, identity: str | None = None, timeout: float = 30, after: str | None = None,
    ) -> m.WaitResult:  # fmt: skip
        """The next message received in the conversation (or by the identity) after the cursor `after` (by
        default: from now), waiting at most `timeout` seconds. `message` is None if none came; wait again
        from the answer's `cursor` to miss nothing in between."""
        _one_of(conversation, identity)
        conv = self.get_conversation(conversation) if conversation is not None else None
        inbox = conv.identity if conv else identity
        deadline = time.monotonic() + timeout
        while True:
            got = self.wait_for_message(inbox, after=after, timeout=max(1, min(30, int(deadline - time.monotonic()))))
            after = got.cursor
            if (got.message and _in(got.message, conv)) or deadline - time.monotonic() < 1:
                return m.WaitResult(message=got.message if got.message and _in(got.message, conv) else None, cursor=after)


def _in(message: m.FeedEvent, conversation: m.Conversation | None) -> bool:
    """Whether a received message's event is in the conversation (None: any)."""
    return conversation is None or message.conv_id == conversation.id


def _one_of(conversation: str | None, identity: str | None) -> None:
    if (conversation is None) == (identity is None):
        raise ValueError("wait_for_reply: give conversation or identity (one of them)")


class AsyncSendstream(_Operations):
    """The async client: the same methods as `Sendstream`, each awaited."""

    def __init__(
        self, base_url: str | None = None, api_key: str | None = None, *, timeout: float = 40.0,
        max_retries: int = 3, max_wait_s: float = 30.0, http: httpx.AsyncClient | None = None,
    ):  # fmt: skip
        self.base_url, api_key = _settings(base_url, api_key)
        self.max_retries, self.max_wait_s = max_retries, max_wait_s
        self._api_key = api_key
        self._http = http or httpx.AsyncClient(base_url=self.base_url, timeout=timeout)

    async def __aenter__(self) -> AsyncSendstream:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _run(self, call: Call) -> Any:  # type: ignore[override]
        for attempt in range(self.max_retries + 1):
            try:
                response = await self._http.request(
                    call.method, call.path, params=call.params, json=call.body, headers=call.headers(self._api_key)
                )
                return call.read(response)
            except (httpx.TransportError, SendstreamError) as error:
                wait = _retryable(call, error)
                if wait is None or wait > self.max_wait_s or attempt == self.max_retries:
                    raise
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def each(self, list_method: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """Every item of a list method that pages by cursor, page after page (as `Sendstream.each`):
        `async for draft in mail.each(mail.list_drafts, status="pending"): ...`"""
        cursor = None
        while True:
            page = await list_method(*args, **kwargs, cursor=cursor)
            for item in page.data:
                yield item
            if not page.has_more:
                return
            cursor = page.next_cursor

    async def iter_events(self, *, after: str | None = None, types: list[str] | None = None) -> AsyncIterator[m.FeedEvent]:
        while True:
            page = await self.list_events(after=after, types=types, limit=100)
            for event in page.data:
                yield event
            after = page.next_cursor
            if not page.has_more:
                return

    async def stream_events(self, *, after: str | None = None, types: list[str] | None = None) -> AsyncIterator[m.FeedEvent]:
        """The organization's events as they happen (from `after`, else from now), without end."""
        params = _drop_none({"after": after, "types": ",".join(types) if types else None})
        headers = Call("GET", "").headers(self._api_key)
        async with self._http.stream("GET", "/v1/events/stream", params=params, headers=headers, timeout=None) as response:
            if response.status_code >= 400:
                await response.aread()
                Call("GET", "").read(response)
            pending: dict[str, str] = {}
            async for line in response.aiter_lines():
                for event in _sse([line], pending):
                    yield event

    async def wait_for_reply(
        self, *, conversation: str | None = None, identity: str | None = None, timeout: float = 30, after: str | None = None,
    ) -> m.WaitResult:  # fmt: skip
        """As `Sendstream.wait_for_reply`."""
        _one_of(conversation, identity)
        conv = await self.get_conversation(conversation) if conversation is not None else None
        inbox = conv.identity if conv else identity
        deadline = time.monotonic() + timeout
        while True:
            got = await self.wait_for_message(inbox, after=after, timeout=max(1, min(30, int(deadline - time.monotonic()))))
            after = got.cursor
            if (got.message and _in(got.message, conv)) or deadline - time.monotonic() < 1:
                return m.WaitResult(message=got.message if got.message and _in(got.message, conv) else None, cursor=after)
