"""`sendstream`: the operator's commands (installed with the project as a console script), and the
user's (send, reply, list, show, tail, wait: services/mailcli.py).

    sendstream audit show <messageId>     a message's trail, from the archive
    sendstream audit verify [--org ID]    check every organization's hash chain; exit 1 at a break
    sendstream replay [--org ID] [--check] rebuild the views from the archive, compare, swap them in
    sendstream replay --as-of TIME        the views as they were at TIME, into a schema of their own
    sendstream tenant delete ORG --yes    delete an organization's data: its rows, archive and blobs
    sendstream addresses conflicts        addresses held by several organizations, or outside their domain
    sendstream reports unmatched [--org ID] reports that named a message of ours but were not borne out

They connect to `DATABASE_URL` (by default the PostgreSQL `make run` starts).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
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

from projections.chain import verify_chain
from schemas import ids
from services import mailcli
from services.common import db
from services.common.domain.blobs import blob_store
from services.common.settings import CommonSettings, LocalSettings

if TYPE_CHECKING:
    from projections import replay as replaying

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


class OrgId(click.ParamType):
    """An organization's id as the API shows it (`org_…`) or as a bare UUID."""

    name = "org"

    def convert(self, value: Any, param: Any, ctx: Any) -> UUID:
        if isinstance(value, UUID):
            return value
        if (org_id := ids.parse("org", value)) is None:
            self.fail(f"{value!r} is not an organization id (org_… or a UUID)", param, ctx)
        return org_id


ORG = OrgId()


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
@click.option("--org", "org_id", type=ORG, help="Only this organization's chain.")
@database
def verify(org_id: UUID | None, database_url: str) -> None:
    """Check each organization's hash chain; name the first event that does not match (exit status 1)."""

    async def run() -> int:
        conn = await connect(database_url)
        try:
            heads = await conn.fetch(
                """SELECT org_id, seq - dropped_seq AS seq FROM archive_heads
                    WHERE $1::uuid IS NULL OR org_id = $1 ORDER BY org_id""",
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


class Retry(Exception):
    """The views still differ from the rebuild, and there is time to let the projections catch up."""


def moment(_ctx: Any, _param: Any, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time (e.g. 2026-11-01T00:00Z)") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@asynccontextmanager
async def blobs_of(database_url: str) -> AsyncIterator[Any]:
    """The deployment's blob store (bodies too large for an event are kept there)."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2, init=db.init_connection)
    store = blob_store(CommonSettings(database_url=database_url), pool)
    await store.start()
    try:
        yield store
    finally:
        await store.stop()
        await pool.close()


def report(differences: list[replaying.Difference], samples: int = 10) -> None:
    table = Table(title="live views against the rebuild")
    for column in ("view", "changed", "missing from the live view", "not explained by the log"):
        table.add_column(column)
    for d in differences:
        table.add_row(d.table, str(len(d.changed)), str(len(d.missing)), str(len(d.unexplained)))
    console.print(table)
    for d in differences:
        for key in d.changed[:samples]:
            console.print(
                f"  {d.table} {'/'.join(map(str, key))}: {', '.join(d.columns.get(key, []))} differ"
            )
        for key in d.missing[:samples]:
            console.print(f"  {d.table} {'/'.join(map(str, key))}: missing from the live view")
        for key in d.unexplained[:samples]:
            console.print(
                f"  {d.table} {'/'.join(map(str, key))}: in the live view, not explained by the log"
            )


@cli.command()
@click.option("--org", "org_id", type=ORG, help="Only this organization's views.")
@click.option("--as-of", "as_of", callback=moment, help="Rebuild the views as they were at this time "
              "(ISO 8601) into a schema of their own, and keep it; the live views are left alone.")  # fmt: skip
@click.option("--schema", help="The schema of an --as-of rebuild (default: asof_<time>).")
@click.option("--check", is_flag=True, help="Compare only: swap nothing; exit 1 if the views differ.")
@click.option("--wait", "wait_s", default=10.0, show_default=True,
              help="Seconds to wait for the archive and the projections to catch up with each other.")  # fmt: skip
@click.option("--workers", type=click.IntRange(1), show_default="one per core",
              help="Processes that rebuild, organizations shared out among them (a large archive only; "
                   "each holds 2-3 database connections).")  # fmt: skip
@database
def replay(
    org_id: UUID | None, as_of: datetime | None, schema: str | None, check: bool, wait_s: float,
    workers: int | None, database_url: str,
) -> None:  # fmt: skip
    """Rebuild the views (messages, conversations, suppressions) from the archive into fresh tables,
    catch up, compare them with the live ones row for row (printing every difference) and swap them in,
    in one transaction."""
    from projections import replay as replaying  # noqa: PLC0415 - only this command needs it (and it is slow to load)

    workers = workers or replaying.default_workers()
    if as_of is not None:
        schema = schema or f"asof_{as_of.astimezone(UTC):%Y%m%dt%H%M%Sz}"
    orgs = [org_id] if org_id is not None else None

    async def rebuild(r: replaying.Rebuild) -> None:
        await r.create()
        with progress_bar() as bar:
            task = bar.add_task("replaying", total=await r.count())
            started = time.monotonic()
            await r.run(lambda n: bar.advance(task, n))
            await r.run(lambda n: bar.advance(task, n))  # what was archived meanwhile
        took = time.monotonic() - started
        console.print(
            f"{r.applied:,} events replayed in {took:.1f}s ({r.applied / max(took, 1e-9):,.0f} events/s, "
            f"{r.processes} {'process' if r.processes == 1 else 'processes'})"
        )

    async def run() -> int:
        async with blobs_of(database_url) as blobs:
            if as_of is not None:
                r = replaying.Rebuild(database_url, schema, blobs, orgs=orgs, as_of=as_of, workers=workers)
                await rebuild(r)
                console.print(f"the views as of {as_of.isoformat()} are in schema {schema} "
                              f"(SET search_path TO {schema}, public)")  # fmt: skip
                return 0
            conn = await connect(database_url)
            r = replaying.Rebuild(database_url, "sendstream_replay", blobs, orgs=orgs, workers=workers)
            try:
                if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", replaying.REPLAY_LOCK):
                    console.print("[red]another replay is running")
                    return 2
                if not check and await replaying.cut(conn, org_id):
                    console.print("[red]retention dropped old months of the archive: a rebuild would lose "
                                  "their messages, so nothing is swapped (--check and --as-of still work)")  # fmt: skip
                    return 2
                await rebuild(r)
                deadline = time.monotonic() + wait_s
                while True:
                    try:
                        async with conn.transaction():
                            await replaying.settle(conn, r, max(deadline - time.monotonic(), 0))
                            differences = await replaying.compare(conn, r.schema, org_id)
                            if any(differences) and time.monotonic() < deadline:
                                raise Retry  # perhaps only the projections behind: let them go on
                            if any(differences):
                                report(differences)
                            if not check:
                                await replaying.swap(conn, r.schema, org_id)
                        break
                    except Retry:
                        await asyncio.sleep(0.5)
                if not any(differences):
                    console.print("[green]the rebuilt views equal the live ones, row for row")
                elif not check:
                    console.print("[yellow]the rebuilt views are swapped in")
                return 1 if check and any(differences) else 0
            except replaying.NotSettled as e:
                console.print(f"[red]{e}: nothing swapped (try again, or with a longer --wait)")
                return 2
            finally:
                await r.drop()
                await conn.close()

    sys.exit(asyncio.run(run()))


@cli.group()
def reports() -> None:
    """Delivery and feedback reports about the mail we sent."""


@reports.command()
@click.option("--org", "org_id", type=ORG, help="Only this organization's.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON lines.")
@database
def unmatched(org_id: UUID | None, limit: int, as_json: bool, database_url: str) -> None:
    """Reports that named a message of ours for a recipient it was not sent to, or that did not come back
    to the mailbox it was sent from: recorded, and nothing else done with them. Newest first."""

    async def run() -> list[asyncpg.Record]:
        conn = await connect(database_url)
        try:
            return await conn.fetch(
                """SELECT * FROM unmatched_reports WHERE $1::uuid IS NULL OR org_id = $1
                    ORDER BY received_at DESC, id DESC LIMIT $2""",
                org_id,
                limit,
            )
        finally:
            await conn.close()

    rows = asyncio.run(run())
    if as_json:
        for r in rows:
            click.echo(json.dumps({k: (v if isinstance(v, int | str | list) or v is None else str(v))
                                   for k, v in dict(r).items()}, sort_keys=True))  # fmt: skip
        return
    table = Table(title=f"{len(rows)} unmatched reports")
    for column in ("received at", "org", "message", "kind", "claims", "recipient", "why", "came to", "from"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["received_at"].isoformat(timespec="seconds"), ids.render("org", r["org_id"]), str(r["message_id"]),
            r["kind"], r["outcome"], r["recipient"], r["reason"], ", ".join(r["arrived_at"]), r["sender"] or "<>",
        )  # fmt: skip
    console.print(table)


@cli.group()
def tenant() -> None:
    """An organization's data as a whole."""


@tenant.command("delete")
@click.argument("org_id", type=ORG)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--quiet", "quiet_s", default=3.0, show_default=True,
              help="Seconds without a new event of the organization before its data is erased.")  # fmt: skip
@click.option("--wait", "wait_s", default=120.0, show_default=True,
              help="Seconds to wait for its work under way to settle before giving up (exit status 2).")  # fmt: skip
@database
def delete(org_id: UUID, yes: bool, quiet_s: float, wait_s: float, database_url: str) -> None:
    """Delete ORG_ID's data: its keys, identities, mailboxes, messages, threads, suppressions, webhooks,
    every other row of it, its archived events and their hash chain, and the blobs (attachments, raw
    messages) no other organization refers to. Kafka's topics keep its events until their retention
    expires."""
    from services import tenants  # noqa: PLC0415 - only this command needs it (and it is slow to load)


    async def run() -> int:
        conn = await connect(database_url)
        try:
            try:
                org = await tenants.describe(conn, org_id)
            except (tenants.NotFound, tenants.Refused) as e:
                console.print(f"[red]{e}")
                return 1
            console.print(f"organization {org['name'] or '(already removed)'} ({ids.render('org', org_id)}): "
                          f"{org['identities']} identities, {org['messages']} messages, "
                          f"{org['events'] or 0} archived events")  # fmt: skip
            if not yes and not click.confirm("Delete all of it? This cannot be undone"):
                return 1
            retired_at = await tenants.retire(conn, org_id)
            console.print("retired: its keys are revoked, its identities, mailboxes and webhooks stopped")
            with console.status("waiting for its work under way to settle"):
                await tenants.drain(conn, org_id, retired_at, quiet_s, wait_s)
            async with blobs_of(database_url) as blobs:
                erased = await tenants.erase(conn, org_id, blobs, retired_at)
        except tenants.NotQuiet as e:
            console.print(f"[red]{e}: nothing erased yet (it stays retired; run the command again)")
            return 2
        finally:
            await conn.close()
        table = Table(title="rows deleted")
        table.add_column("table")
        table.add_column("rows", justify="right")
        for name, count in erased.rows.items():
            if count:
                table.add_row(name, f"{count:,}")
        console.print(table)
        console.print(f"blobs: {erased.blobs_deleted} deleted, {erased.blobs_shared} kept (another "
                      f"organization refers to them), {erased.blobs_left} put again since or already gone")  # fmt: skip
        console.print("[green]organization deleted[/green]; Kafka's topics keep its events until their "
                      "retention expires")  # fmt: skip
        return 0

    sys.exit(asyncio.run(run()))


@cli.group()
def addresses() -> None:
    """Hosted addresses and the organizations holding them."""


@addresses.command("conflicts")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@database
def address_conflicts(as_json: bool, database_url: str) -> None:
    """Addresses held against the ownership rule (SPEC 5a), left from before it: by several organizations
    (mail to it reaches only the first), or by one that does not hold its domain while another verified
    it. Resolve each by deleting the identity or mailbox that should not have it. Exit status 1 if any."""
    from services.ingress.core import domains  # noqa: PLC0415 - only this command needs it (slow to load)


    async def run() -> int:
        conn = await connect(database_url)
        try:
            names = {r["id"]: r["name"] for r in await conn.fetch("SELECT id, name FROM organizations")}
            found = await domains.conflicts(conn)
        finally:
            await conn.close()

        def org(org_id: UUID | None) -> str:
            return f"{names.get(org_id, '?')} ({ids.render('org', org_id)})" if org_id else "-"

        if as_json:
            for h in found:
                print(json.dumps({
                    "address": h.address, "domainHolder": h.domain_holder and ids.render("org", h.domain_holder),
                    "holders": [{"org": ids.render("org", o), "since": s.isoformat()} for o, s in h.holders],
                }))  # fmt: skip
            return 1 if found else 0
        if not found:
            console.print("no conflicts: every address is held by one organization, at a domain it may use")
            return 0
        table = Table(title="addresses held against the rule")
        for column in ("address", "held by (the first receives its mail)", "domain verified by"):
            table.add_column(column)
        for h in found:
            table.add_row(h.address, "\n".join(f"{org(o)} since {s:%Y-%m-%d}" for o, s in h.holders),
                          org(h.domain_holder))  # fmt: skip
        console.print(table)
        return 1

    sys.exit(asyncio.run(run()))


mailcli.register(cli)  # the user's commands: send, reply, list, show, tail, wait (over the HTTP API)

if __name__ == "__main__":
    cli()
