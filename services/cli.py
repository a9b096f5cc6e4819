"""`sendstream`: the operator's commands (installed with the project as a console script).

    sendstream audit show <messageId>     a message's trail, from the archive
    sendstream audit verify [--org ID]    check every organization's hash chain; exit 1 at a break

They connect to `DATABASE_URL` (by default the PostgreSQL `make run` starts).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any
from uuid import UUID

import asyncpg
import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from projections.archive import verify_chain
from services.common import db
from services.common.settings import LocalSettings

console = Console()


def default_database_url() -> str:
    return (
        os.environ.get("DATABASE_URL")
        or os.environ.get("SENDSTREAM_DATABASE_URL")
        or f"postgresql://postgres@127.0.0.1:{LocalSettings().postgres_port}/sendstream"
    )


database = click.option(
    "--database-url",
    default=default_database_url,
    show_default="DATABASE_URL, else the PostgreSQL of `make run`",
    help="PostgreSQL of the deployment.",
)


async def connect(url: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(url)
    await db.init_connection(conn)
    return conn


class Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} events/s")


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(),
                    TimeRemainingColumn(), console=console, transient=True)  # fmt: skip


@click.group()
def cli() -> None:
    """sendstream: the operator's commands."""


@cli.group()
def audit() -> None:
    """The archive's audit trails and their hash chains."""


# Shown for an event in a trail: the payload fields that say what happened (the rest is in --json).
SHOWN = (
    "handle", "to", "mailbox_email", "affinity", "origin", "attempt", "reply", "reason", "recipient",
    "status", "diagnostic", "is_read", "is_starred", "endpoint_id", "url", "response_status", "error",
)  # fmt: skip


def summary(event: dict[str, Any]) -> str:
    payload = event.get("payload") or {}
    parts = []
    for name in SHOWN:
        value = payload.get(name)
        if value in (None, [], {}):
            continue
        if isinstance(value, dict):
            value = " ".join(f"{k}={v}" for k, v in value.items() if v is not None)
        parts.append(f"{name}={value}")
    if (content := payload.get("content")) and content.get("subject"):
        parts.append(f"subject={content['subject']!r}")
    return "  ".join(parts)


@audit.command()
@click.argument("message_id", type=click.UUID)
@click.option("--json", "as_json", is_flag=True, help="Print the archived events as JSON lines.")
@database
def show(message_id: UUID, as_json: bool, database_url: str) -> None:
    """Print MESSAGE_ID's trail: every archived event of the message, in order."""

    async def run() -> list[asyncpg.Record]:
        conn = await connect(database_url)
        try:
            return await conn.fetch(
                """SELECT seq, event_id, type, occurred_at, event FROM event_archive
                    WHERE message_ids @> ARRAY[$1]::uuid[] ORDER BY occurred_at, event_id""",
                message_id,
            )
        finally:
            await conn.close()

    rows = asyncio.run(run())
    if not rows:
        console.print(f"no archived events for message {message_id}")
        sys.exit(1)
    if as_json:
        for r in rows:
            click.echo(json.dumps(r["event"], sort_keys=True))
        return
    table = Table(title=f"message {message_id}", show_lines=False)
    for column in ("occurred at", "event", "seq", "what"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["occurred_at"].isoformat(timespec="milliseconds"), r["type"], str(r["seq"]),
                      summary(r["event"]))  # fmt: skip
    console.print(table)


@audit.command()
@click.option("--org", "org_id", type=click.UUID, help="Only this organization's chain.")
@database
def verify(org_id: UUID | None, database_url: str) -> None:
    """Check each organization's hash chain; name the first event that does not match (exit status 1)."""

    async def run() -> int:
        conn = await connect(database_url)
        try:
            heads = await conn.fetch(
                "SELECT org_id, seq FROM archive_heads WHERE $1::uuid IS NULL OR org_id = $1 ORDER BY org_id",
                org_id,
            )
            broken = 0
            with progress_bar() as bar:
                task = bar.add_task("verifying", total=sum(h["seq"] for h in heads))
                for head in heads:
                    bad = await verify_chain(conn, head["org_id"], lambda n: bar.advance(task, n))
                    if bad:
                        broken += 1
                        where = f"event {bad.event_id}" if bad.event_id else "its end"
                        console.print(
                            f"[red]org {bad.org_id}: chain broken at #{bad.seq}, {where}: {bad.problem}"
                        )
            total = sum(h["seq"] for h in heads)
            if not broken:
                console.print(f"[green]{len(heads)} chains, {total} events: every hash matches")
            return broken
        finally:
            await conn.close()

    if asyncio.run(run()):
        sys.exit(1)


if __name__ == "__main__":
    cli()
