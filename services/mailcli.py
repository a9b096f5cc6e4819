"""The user's commands of `sendstream` (beside the operator's, services/cli.py): mail over the HTTP API,
through the Python client (clients/python), configured by SENDSTREAM_API_URL (default `make run`'s) and
SENDSTREAM_API_KEY. Each prints for a person, or with `--json` one JSON document (or one per line, for
`tail`) for a script.

    sendstream send IDENTITY TO... --subject S --text T [--send-at TIME [--timezone Z]] [--key K]
    sendstream reply CONV_ID --text T [--key K]
    sendstream list IDENTITY [--limit N]          its conversations, most recently active first
    sendstream show CONV_ID                       a conversation and its messages
    sendstream tail [--types T,...] [--count N]   the organization's events as they happen
    sendstream wait (--conversation C | --identity H) [--timeout S]   exit 1 if nothing came
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.table import Table

console = Console()


@contextmanager
def client() -> Iterator[Any]:
    """The API client, or a clear exit: not installed, not configured, or a refusal (its message)."""
    try:
        import httpx  # noqa: PLC0415 - the client's, installed with it
        from sendstream_client import Sendstream, SendstreamError  # noqa: PLC0415 - a client-side extra
    except ImportError:
        raise click.ClickException(
            "these commands need the Python client: pip install -e clients/python (make run installs it)"
        ) from None
    try:
        mail = Sendstream()
    except ValueError as e:  # no key
        raise click.ClickException(f"{e} (and SENDSTREAM_API_URL, if not http://127.0.0.1:8080)") from None
    try:
        with mail:
            yield mail
    except SendstreamError as e:
        raise click.ClickException(f"{e.status} {e.type}: {e.message}") from None
    except httpx.HTTPError as e:
        raise click.ClickException(f"cannot reach sendstream at {mail.base_url} (SENDSTREAM_API_URL): {e!r}") from None


def emit(value: Any, as_json: bool, human: Any = None) -> None:
    if as_json:
        print(value.model_dump_json(by_alias=True) if hasattr(value, "model_dump_json") else json.dumps(value))
    elif human is not None:
        human(value)


def body_options(f: Any) -> Any:
    f = click.option("--html", help="The HTML body.")(f)
    f = click.option("--text", help="The plain-text body.")(f)
    f = click.option("--key", "key", help="An Idempotency-Key of yours (one is made otherwise): the same key, one send.")(f)
    return click.option("--json", "as_json", is_flag=True, help="Print the API's answer as JSON.")(f)


def sent(answer: Any) -> None:
    for m in answer.messages:
        detail = getattr(m, "reason", None) or getattr(m, "send_at", None) or getattr(m, "draft_id", None) or ""
        console.print(f"{m.to}: [bold]{m.status}[/bold] {m.conv_id or ''} {detail}".rstrip())


def register(cli: click.Group) -> None:
    """Add the user's commands to the `sendstream` group."""

    @cli.command()
    @click.argument("identity")
    @click.argument("to", nargs=-1, required=True)
    @click.option("--subject", required=True)
    @click.option("--send-at", help="Send later: RFC 3339, or a local time with --timezone.")
    @click.option("--timezone", help="The IANA time zone of a local --send-at.")
    @body_options
    def send(identity: str, to: tuple[str, ...], subject: str, send_at: str | None, timezone: str | None,
             text: str | None, html: str | None, key: str | None, as_json: bool) -> None:  # fmt: skip
        """Send a new conversation from IDENTITY to each address TO."""
        if text is None and html is None:
            raise click.UsageError("give --text, --html or both")
        with client() as mail:
            answer = mail.send(identity, list(to), subject, text=text, html=html, send_at=send_at, timezone=timezone,
                               idempotency_key=key)  # fmt: skip
        emit(answer, as_json, sent)

    @cli.command()
    @click.argument("conv_id")
    @body_options
    def reply(conv_id: str, text: str | None, html: str | None, key: str | None, as_json: bool) -> None:
        """Reply in the conversation CONV_ID (to its counterpart, from its mailbox)."""
        if text is None and html is None:
            raise click.UsageError("give --text, --html or both")
        with client() as mail:
            answer = mail.reply(mail.get_conversation(conv_id).identity, conv_id, text=text, html=html, idempotency_key=key)
        emit(answer, as_json, sent)

    @cli.command("list")
    @click.argument("identity")
    @click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 100))
    @click.option("--json", "as_json", is_flag=True, help="Print the API's answer as JSON.")
    def list_(identity: str, limit: int, as_json: bool) -> None:
        """IDENTITY's conversations, most recently active first."""
        with client() as mail:
            page = mail.list_conversations(identity, limit=limit)

        def table(page: Any) -> None:
            t = Table("conversation", "with", "subject", "messages", "last")
            for c in page.data:
                t.add_row(c.id, c.counterpart or "", c.subject or "", str(len(c.messages)), c.updated_at)
            console.print(t)

        emit(page, as_json, table)

    @cli.command()
    @click.argument("conv_id")
    @click.option("--json", "as_json", is_flag=True, help="Print the API's answer as JSON.")
    def show(conv_id: str, as_json: bool) -> None:
        """The conversation CONV_ID and its messages, in order."""
        with client() as mail:
            conversation = mail.get_conversation(conv_id)

        def printed(c: Any) -> None:
            console.print(f"[bold]{c.subject or ''}[/bold]  {c.identity} <-> {c.counterpart or ''}")
            for m in c.messages:
                arrow = "->" if m.direction == "outbound" else "<-"
                console.print(f"\n{arrow} {m.created_at} {m.from_ or ''} [{m.status}]")
                console.print(m.reply_text or m.text or "", markup=False)

        emit(conversation, as_json, printed)

    @cli.command()
    @click.option("--types", help="Only these event types, comma-separated (e.g. MessageSent,MessageReceived).")
    @click.option("--after", help="From this cursor on (by default: from now).")
    @click.option("--count", type=click.IntRange(1), help="Stop after this many events.")
    @click.option("--json", "as_json", is_flag=True, help="One JSON document per event, per line.")
    def tail(types: str | None, after: str | None, count: int | None, as_json: bool) -> None:
        """The organization's events as they happen (Ctrl-C to stop)."""
        wanted = [t.strip() for t in types.split(",")] if types else None
        seen = 0
        with client() as mail:
            try:
                for event in mail.stream_events(after=after, types=wanted):
                    if as_json:
                        print(event.model_dump_json(by_alias=True), flush=True)
                    else:
                        payload = event.event.get("payload", {})
                        console.print(f"{event.occurred_at} [bold]{event.type:<18}[/bold] {payload.get('message_id', '')}")
                    seen += 1
                    if count is not None and seen >= count:
                        return
            except KeyboardInterrupt:
                return

    @cli.command()
    @click.option("--conversation", help="Wait for a reply in this conversation...")
    @click.option("--identity", help="...or for any mail to this identity.")
    @click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(1, 3600))
    @click.option("--json", "as_json", is_flag=True, help="Print the received message's event as JSON.")
    def wait(conversation: str | None, identity: str | None, timeout: float, as_json: bool) -> None:
        """Wait for the next message received; exit 1 if none came within --timeout seconds."""
        if (conversation is None) == (identity is None):
            raise click.UsageError("give --conversation or --identity")
        with client() as mail:
            got = mail.wait_for_reply(conversation=conversation, identity=identity, timeout=timeout).message
        if got is None:
            if as_json:
                print("null")
            sys.exit(1)

        def printed(event: Any) -> None:
            message = event.event.get("payload", {}).get("message", {})
            console.print(f"[bold]{message.get('from_addr', '')}[/bold]: {message.get('content', {}).get('subject', '')}")
            console.print(message.get("reply_text") or message.get("content", {}).get("text") or "", markup=False)

        emit(got, as_json, printed)
