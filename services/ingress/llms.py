"""`GET /llms.txt`: this API described for a language model (https://llmstxt.org): what to call, how to
authenticate, how to send exactly once, how to wait for a reply, and every route with what it needs,
made from the route registry so it is never out of date."""

from __future__ import annotations

from collections import defaultdict
from functools import cache

from services.ingress.http import ROUTES

INTRO = """# sendstream

> A self-hostable email API for AI agents and outbound sequencers. An identity (e.g. alice@agents.example.test)
> sends from a pool of real mailboxes, each conversation staying on the mailbox it started on; replies come
> back by SMTP or IMAP and are threaded into their conversation. Every fact is an event in a replayable log.

## Essentials

- Base URL: where this file was read from. Authenticate with `Authorization: Bearer <api key>`. Keys have
  scopes: `read`, `send`, `approve`, `admin` (all of them).
- Send exactly once: give every send an `Idempotency-Key` header (any string of your own, e.g. a task id).
  Repeating the request with the same key answers the first answer and never sends twice, even after a
  crash; the same key with another request is 409. Retry 429 and 503 after their `Retry-After`, with the
  same key. A 503 `outcome_unknown` means the send may have gone: retry only with the same key.
- Errors are JSON, `{"error": {"type", "message"}}` on `/v1`; the message names the field at fault.
- Wait for a reply without polling: `GET /v1/messages/wait?inbox=<handle>&timeout=30` answers as soon as a
  message arrives (or `message: null` after the timeout); pass the `cursor` it answers as `after` next time.
  `GET /v1/events/stream` is the whole organization's event feed as Server-Sent Events.
- Send later with `sendAt` (RFC 3339, or local time with `timezone`); `unlessReplied: true` cancels it if
  the conversation gets a reply first. Cancel with `POST /v1/messages/{messageId}/cancel`.
- Identities with `requireApproval` hold every send as a draft until a person approves it.
- Also spoken, over the same mail: the inboxes dialect (`/v1/inboxes`), the mailboxes dialect
  (`/mailboxes`, `/api/v1`) and AgentMail's API (`/v0`). Machine-readable: `/openapi.json` (routes), `/asyncapi.json` (events).

## Examples

```
POST /v1/identities/alice@agents.example.test/send
Idempotency-Key: task-42-intro
{"to": "morgan@example.test", "subject": "Intro", "text": "Hi Morgan"}
-> 202 {"accepted": 1, "messages": [{"to": "morgan@example.test", "status": "accepted", "convId": "conv_..."}], ...}

POST /v1/identities/alice@agents.example.test/send
Idempotency-Key: task-42-reply
{"convId": "conv_...", "text": "Thanks, see you Monday"}

GET /v1/messages/wait?inbox=alice@agents.example.test&timeout=30
-> 200 {"message": {"type": "MessageReceived", "event": {...}, "cursor": "17"}, "cursor": "17"}
```

A typed Python client: `sendstream-client` (clients/python in the repository).
"""


@cache
def llms_txt() -> str:
    by_tag: dict[str, list[str]] = defaultdict(list)
    for r in sorted(ROUTES, key=lambda r: (r.tag, r.path, r.method)):
        needs = f" (`{r.scope}` scope)" if r.scope else " (no key)"
        body = f", body `{r.body.__name__}`" if r.body is not None else ""
        key = ", takes `Idempotency-Key`" if r.idempotent else ""
        by_tag[r.tag].append(f"- `{r.method} {r.path}`: {r.summary}{needs}{body}{key}")
    sections = [f"## Routes: {tag}\n\n" + "\n".join(lines) for tag, lines in by_tag.items()]
    return INTRO + "\n" + "\n\n".join(sections) + "\n"
