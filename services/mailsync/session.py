"""One mailbox's IMAP session: log in, read every folder worth reading (INBOX and the spam folder) from
its checkpoint on, then wait (IDLE where offered, else a poll) and read again, until stopped.

Exactly once: a folder's checkpoint (UIDVALIDITY, last UID) advances only after the messages up to it
are stored and their events are on the log (the intake, shared with inbound SMTP). A crash in between
reads them again, and the intake derives the same event ids from the same message (its Message-ID, or
else its bytes), which every consumer drops the second time. A UIDVALIDITY change (the folder was
rebuilt: its UIDs mean nothing any more) reads the folder again from when its sync began, passing
over what the messages view already holds by Message-ID.

Failures never reach sending: a refused login or a lost connection is shown as the mailbox's sync
`error` and tried again after a growing wait. That error carries a server's words only from a
well-formed IMAP answer (printable, bounded); anything else is a fixed phrase, so it tells a tenant
nothing about what listens at a host. The connection goes to an address the egress policy permits
(services/common/egress.py), and a password without TLS only to a network the operator allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser
from email.utils import parseaddr
from uuid import UUID

import aioimaplib
import asyncpg
import structlog
from prometheus_client import Counter

from mail.parse import MAX_TOKEN, Unacceptable, header, one_line, policy, token
from services.common.domain.receiving.intake import Intake, Refused, Target, Turn, screened
from services.common.egress import Egress, EgressRefused, Unresolvable, printable
from services.common.secrets import Secrets
from services.common.settings import MailsyncSettings

log = structlog.get_logger("sendstream.mailsync")
MESSAGES = Counter("sendstream_mailsync_messages_total", "Messages read over IMAP, by outcome", ["outcome"])
FAILURES = Counter("sendstream_mailsync_failures_total", "IMAP sessions that failed, by reason", ["reason"])

_MSG_ID = re.compile(r"<[^<>\s]+>")
_OURS = re.compile(r"^<([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})@")
_FETCHED = re.compile(rb"UID (\d+)")
_GREETING = re.compile(rb"\* (OK|PREAUTH)\b", re.I)
_SPAM_NAMES = {"junk", "spam", "junk e-mail", "junk email", "bulk mail"}


class ImapRefused(Exception):
    """The server answered NO or BAD: what it said is the mailbox's sync error."""


class NotImap(Exception):
    """What answered at the IMAP host's port did not greet as an IMAP server."""


class Unreachable(Exception):
    """No connection to any permitted address of the IMAP host."""


class CleartextRefused(Exception):
    """The password would go over a connection without TLS to an address not allowed for it."""


def shown(exc: BaseException) -> str:
    """A failed session as the mailbox's sync error: fixed phrases, or an IMAP server's bounded words."""
    if isinstance(exc, ImapRefused):
        return printable(str(exc), 500)
    if isinstance(exc, EgressRefused):
        return f"the IMAP server's {exc}"
    if isinstance(exc, Unresolvable):
        return "the IMAP server's host name does not resolve"
    if isinstance(exc, CleartextRefused):
        return (
            f"the password is not sent without TLS to {exc} (use `starttls` or `tls`, or the operator allows "
            "its network in SENDSTREAM_EGRESS_CLEARTEXT_AUTH_NETWORKS)"
        )
    if isinstance(exc, Unreachable):
        return "could not connect to the IMAP server"
    if isinstance(exc, NotImap):
        return "the server did not answer as an IMAP server"
    if isinstance(exc, ssl.SSLError):
        return f"TLS with the IMAP server failed ({printable(exc.reason or '', 100)})"
    if isinstance(exc, TimeoutError):
        return "the IMAP server did not answer in time"
    if isinstance(exc, ConnectionError | EOFError):
        return "the IMAP server closed the connection"
    return f"the IMAP session failed ({type(exc).__name__})"


class _Protocol(aioimaplib.IMAP4ClientProtocol):
    """aioimaplib's protocol, noticing at once a server that greets with something other than an IMAP
    greeting, or hangs up before greeting (aioimaplib would wait for its timeout), and one that greets
    but does not answer CAPABILITY (aioimaplib would wait for ever: its greeting holds a lock that
    cancelling the wait for it needs)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, conn_lost_cb=None, timeout: float = 30.0) -> None:
        super().__init__(loop, conn_lost_cb)
        self.not_imap = asyncio.Event()
        self.timeout = timeout

    async def welcome(self, command: bytes) -> None:
        try:
            await super().welcome(command)
        except (TimeoutError, aioimaplib.Error):
            self.not_imap.set()
            self.transport.close()

    async def capability(self) -> None:
        async with asyncio.timeout(self.timeout):
            await super().capability()

    def _handle_line(self, line: bytes, current_cmd):
        if self.state == aioimaplib.CONNECTED and line and not _GREETING.match(line):
            self.not_imap.set()
            self.transport.close()
            return None
        return super()._handle_line(line, current_cmd)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state in (aioimaplib.STARTED, aioimaplib.CONNECTED):
            self.not_imap.set()
        super().connection_lost(exc)


class GuardedIMAP4(aioimaplib.IMAP4):
    """aioimaplib's client, connected through the egress policy: to an address of the host it permits,
    TLS (when asked for) verifying the host's name. `address` is the one connected to."""

    def __init__(
        self, egress: Egress, host: str, port: int, timeout: float, ssl_context: ssl.SSLContext | None
    ):
        self.egress, self.address = egress, None
        super().__init__(host, port, timeout=timeout, ssl_context=ssl_context)

    def create_client(self, host, port, loop, conn_lost_cb=None, ssl_context=None) -> None:
        local_loop = loop if loop is not None else asyncio.get_running_loop()
        self.protocol = _Protocol(local_loop, conn_lost_cb, self.timeout)
        self._client_task = local_loop.create_task(self._open(local_loop, host, port, ssl_context))

    async def _open(self, loop: asyncio.AbstractEventLoop, host: str, port: int, ssl_context) -> None:
        try:
            sock, self.address = await self.egress.connect(host, port, self.timeout)
        except (EgressRefused, Unresolvable):
            raise
        except (OSError, TimeoutError) as exc:
            raise Unreachable() from exc
        try:
            await loop.create_connection(
                lambda: self.protocol,
                sock=sock,
                ssl=ssl_context,
                server_hostname=host if ssl_context else None,
            )
        except BaseException:
            sock.close()
            raise


@dataclass(frozen=True)
class Account:
    """A mailbox with an IMAP account, as its session needs it."""

    target: Target
    email: str
    host: str
    port: int
    tls: str
    username: str
    password: str
    sealed: (
        str  # the stored password: its seal is new on every change, so it tells a session's config is current
    )

    @property
    def key(self) -> str:
        return f"{self.username}@{self.host}"


ACCOUNT = """
SELECT m.id, m.org_id, m.identity_id, i.dialect, m.email, m.imap_host, m.imap_port, m.imap_tls,
       m.imap_username, m.imap_password
  FROM mailboxes m JOIN identities i ON i.id = m.identity_id
 WHERE m.imap_host IS NOT NULL AND m.deleted_at IS NULL AND i.deleted_at IS NULL
"""


async def accounts(pool: asyncpg.Pool, secrets: Secrets, ids: list[UUID] | None = None) -> list[Account]:
    """The mailboxes to sync (those of `ids`, or every one)."""
    rows = await pool.fetch(
        ACCOUNT + (" AND m.id = ANY($1::uuid[])" if ids is not None else ""),
        *([ids] if ids is not None else []),
    )
    return [
        Account(
            target=Target(r["identity_id"], r["org_id"], r["id"], r["dialect"]),
            email=r["email"],
            host=r["imap_host"],
            port=r["imap_port"],
            tls=r["imap_tls"],
            username=r["imap_username"],
            password=secrets.open(r["imap_password"]) or "",
            sealed=r["imap_password"],
        )
        for r in rows
    ]


def _checked(answer: aioimaplib.Response, what: str) -> aioimaplib.Response:
    if answer.result != "OK":
        said = b" ".join(bytes(line) for line in answer.lines).decode(errors="replace").strip()
        raise ImapRefused(f"{what}: {answer.result} {said}".strip())
    return answer


def _code(answer: aioimaplib.Response, name: str) -> int | None:
    for line in answer.lines:
        if m := re.search(rb"\[" + name.encode() + rb" (\d+)\]", bytes(line)):
            return int(m.group(1))
    return None


def fetched_messages(answer: aioimaplib.Response) -> Iterator[tuple[int, bytes]]:
    """(UID, message) of each message of a `UID FETCH (UID BODY.PEEK[])` answer: a `n FETCH (` line, the
    literal, and the UID before or after it (servers choose the order)."""
    uid: int | None = None
    data: bytes | None = None
    for line in answer.lines:
        if isinstance(line, bytearray):
            data = bytes(line)
        else:
            if b"FETCH (" in line:
                uid, data = None, None
            if uid is None and (m := _FETCHED.search(line)):
                uid = int(m.group(1))
        if uid is not None and data is not None:
            yield uid, data
            uid, data = None, None


class Session:
    """The sync of one mailbox, run as a task until cancelled."""

    def __init__(
        self, account: Account, settings: MailsyncSettings, pool: asyncpg.Pool, intake: Intake, worker: str
    ):
        self.account, self.settings, self.pool, self.intake, self.worker = (
            account,
            settings,
            pool,
            intake,
            worker,
        )
        self.imap: aioimaplib.IMAP4 | None = None
        self.egress = Egress.of(settings)
        self.log = log.bind(mailbox_id=str(account.target.mailbox_id), imap=account.key)

    # --- the loop -----------------------------------------------------------------------------------

    async def run(self) -> None:
        failures = 0
        await self.show("syncing")
        while True:
            try:
                folders = await self.connect()
                failures = 0
                await self.follow(folders)
            except asyncio.CancelledError:
                raise
            except (
                ImapRefused, NotImap, Unreachable, CleartextRefused, OSError, TimeoutError, EOFError,
                aioimaplib.AioImapException, ssl.SSLError,
            ) as exc:  # fmt: skip
                reason = shown(exc)
                FAILURES.labels(type(exc).__name__).inc()
                self.log.warning(
                    "IMAP session failed; trying again later", error=reason, attempt=failures + 1
                )
                await self.show("error", reason)
            except (
                Exception
            ):  # our side (PostgreSQL, the log): not the mailbox's fault, not shown as its error
                FAILURES.labels("internal").inc()
                self.log.exception("mailbox sync failed; trying again later", attempt=failures + 1)
            finally:
                await self.close()
            if asyncio.current_task().cancelling():  # asked to stop, and a library took that for a failure
                raise asyncio.CancelledError
            delays = self.settings.mailsync_retry_delays_s
            await asyncio.sleep(delays[min(failures, len(delays) - 1)])
            failures += 1

    async def connect(self) -> list[str]:
        """Log in; returns the folders to read: INBOX, and the spam folder where there is one."""
        a, timeout = self.account, self.settings.mailsync_timeout_s
        context = ssl.create_default_context() if a.tls == "tls" else None
        self.imap = imap = GuardedIMAP4(self.egress, a.host, a.port, timeout, context)
        try:
            async with asyncio.timeout(timeout):
                await imap._client_task  # connected (or refused by the policy)
        except TimeoutError:
            raise Unreachable() from None
        hello = asyncio.ensure_future(imap.wait_hello_from_server())
        refused = asyncio.ensure_future(imap.protocol.not_imap.wait())
        try:
            await asyncio.wait({hello, refused}, timeout=2 * timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            refused.cancel()
        if not hello.done() or hello.exception() is not None:
            hello.cancel()
            raise NotImap()
        if a.tls == "none" and not self.egress.permits_cleartext_auth(imap.address):
            raise CleartextRefused(imap.address)
        if a.tls == "starttls":
            await self.starttls()
        _checked(await self.imap.login(a.username, a.password), "login refused")
        listed = _checked(await self.imap.list('""', "*"), "LIST")
        folders = ["INBOX"]
        for line in listed.lines:
            m = re.match(rb'\((?P<flags>[^)]*)\) (?:"[^"]*"|NIL) (?P<name>.+)$', bytes(line))
            if not m:
                continue
            name = m.group("name").decode(errors="replace").strip('"')
            leaf = re.split(r"[/.]", name)[-1].lower()
            if b"\\Junk" in m.group("flags") or (
                leaf in _SPAM_NAMES and b"\\Noselect" not in m.group("flags")
            ):
                folders.append(name)
                break
        return folders

    async def starttls(self) -> None:
        """Upgrade the plaintext connection (RFC 2595), then ask the capabilities again."""
        assert self.imap is not None
        protocol = self.imap.protocol
        async with asyncio.timeout(self.settings.mailsync_timeout_s):
            _checked(await protocol.simple_command("STARTTLS"), "STARTTLS")
        protocol.transport = await asyncio.get_running_loop().start_tls(
            protocol.transport, protocol, ssl.create_default_context(), server_hostname=self.account.host
        )
        await protocol.capability()

    async def close(self) -> None:
        """Drop the connection at once: a session is stopped inside a rebalance, which waits for it
        (the server ends an IDLE or a LOGOUT-less session by itself)."""
        if self.imap is not None:
            with contextlib.suppress(Exception):
                self.imap.protocol.transport.close()
            self.imap = None

    async def follow(self, folders: list[str]) -> None:
        """Read every folder, then wait for news (IDLE on INBOX, renewed every poll) and read again."""
        assert self.imap is not None
        poll, timeout = self.settings.mailsync_poll_s, self.settings.mailsync_timeout_s
        lost = asyncio.Event()
        self.imap.protocol.conn_lost_cb = lambda _: lost.set()
        while True:
            for folder in folders:
                await self.read(folder)
            await self.show("idle", synced=True)
            if not self.imap.has_capability("IDLE"):
                await asyncio.sleep(poll)
                _checked(await self.imap.noop(), "NOOP")
                continue
            _checked(await self.imap.select("INBOX"), "SELECT INBOX")
            idle = await self.imap.idle_start(timeout=poll)
            push = asyncio.ensure_future(self.imap.wait_server_push(timeout=poll + timeout))
            gone = asyncio.ensure_future(lost.wait())
            try:
                await asyncio.wait({idle, push, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                push.cancel()
                gone.cancel()
            if lost.is_set():
                raise ConnectionResetError("the server closed the connection")
            if not idle.done():
                self.imap.idle_done()
                async with asyncio.timeout(timeout):
                    await idle
            _checked(idle.result(), "IDLE")

    # --- one folder -----------------------------------------------------------------------------------

    async def read(self, folder: str) -> None:
        """Everything new in `folder` since its checkpoint, stored and on the log, the checkpoint after it."""
        assert self.imap is not None
        selected = _checked(await self.imap.select(folder), f"SELECT {folder}")
        validity, uidnext = _code(selected, "UIDVALIDITY"), _code(selected, "UIDNEXT")
        if validity is None:
            raise ImapRefused(f"SELECT {folder}: no UIDVALIDITY")
        mailbox_id = self.account.target.mailbox_id
        checkpoint = await self.pool.fetchrow(
            "SELECT * FROM mailsync_checkpoints WHERE mailbox_id = $1 AND folder = $2", mailbox_id, folder
        )
        if checkpoint is None or checkpoint["account"] != self.account.key:
            since = datetime.now(UTC) - timedelta(seconds=self.settings.mailsync_lookback_s)
            last = await self.first_uid(since, uidnext)
            await self.pool.execute(
                """INSERT INTO mailsync_checkpoints (mailbox_id, folder, account, uidvalidity, last_uid, started_at)
                   VALUES ($1, $2, $3, $4, $5, $6)
                   ON CONFLICT (mailbox_id, folder) DO UPDATE SET account = $3, uidvalidity = $4,
                       last_uid = $5, started_at = $6, updated_at = now()""",
                mailbox_id, folder, self.account.key, validity, last, since,
            )  # fmt: skip
            self.log.info(
                "first sync of the folder", folder=folder, from_uid=last + 1, since=since.isoformat()
            )
        elif checkpoint["uidvalidity"] != validity:
            last = await self.first_uid(checkpoint["started_at"] - timedelta(days=1), None)
            self.log.warning("the folder's UIDVALIDITY changed: reading it again", folder=folder,
                             was=checkpoint["uidvalidity"], now=validity)  # fmt: skip
            await self.advance(folder, validity, last, reset=True)
        else:
            last = checkpoint["last_uid"]
            if uidnext is not None and uidnext <= last + 1:
                return  # nothing new
        found = _checked(await self.imap.uid_search(f"UID {last + 1}:*", charset=None), f"SEARCH {folder}")
        uids = sorted(u for line in found.lines[:-1] for u in map(int, bytes(line).split()) if u > last)
        if uids:
            await self.show("syncing")
        batch = self.settings.mailsync_batch
        for start in range(0, len(uids), batch):
            chunk = uids[start : start + batch]
            fetched = _checked(
                await self.imap.uid("fetch", ",".join(map(str, chunk)), "(UID BODY.PEEK[])"),
                f"FETCH {folder}",
            )
            await self.take_all(sorted(fetched_messages(fetched)), folder)
            await self.advance(folder, validity, chunk[-1])

    async def take_all(self, messages: list[tuple[int, bytes]], folder: str) -> None:
        """Hand a fetched batch to the intake, `mailsync_concurrency` at a time (each waits on the
        database and the blob store), each message's events on the log after the one before it (a reply
        is threaded after what it answers); the checkpoint moves only once all are in. Should one fail,
        the rest are cancelled and the batch is read again: the intake keeps nothing twice."""
        slots = asyncio.Semaphore(self.settings.mailsync_concurrency)
        turns: list[Turn] = []
        for _ in messages:
            turns.append(Turn(before=turns[-1].handed if turns else None))

        async def take(turn: Turn, uid: int, raw: bytes) -> None:
            async with slots:
                await self.take(raw, folder, uid, turn)
            turn.handed.set()  # (it had nothing to publish)

        try:
            async with asyncio.TaskGroup() as group:
                for turn, (uid, raw) in zip(turns, messages, strict=True):
                    group.create_task(take(turn, uid, raw))
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from failed

    async def first_uid(self, since: datetime, uidnext: int | None) -> int:
        """The UID a sync starting at `since` reads after: before the oldest message that recent (none
        looked back for and a UIDNEXT known: the newest message there is now)."""
        assert self.imap is not None
        if uidnext is not None and since >= datetime.now(UTC) - timedelta(seconds=1):
            return uidnext - 1
        found = _checked(
            await self.imap.uid_search(f"SINCE {since.strftime('%d-%b-%Y')}", charset=None), "SEARCH SINCE"
        )
        uids = [u for line in found.lines[:-1] for u in map(int, bytes(line).split())]
        return min(uids) - 1 if uids else (uidnext or 1) - 1

    async def advance(self, folder: str, validity: int, last_uid: int, reset: bool = False) -> None:
        await self.pool.execute(
            f"""UPDATE mailsync_checkpoints SET uidvalidity = $3,
                   last_uid = {"$4" if reset else "GREATEST(last_uid, $4)"}, updated_at = now()
                WHERE mailbox_id = $1 AND folder = $2""",
            self.account.target.mailbox_id, folder, validity, last_uid,
        )  # fmt: skip

    # --- one message ------------------------------------------------------------------------------------

    async def take(self, raw: bytes, folder: str, uid: int, turn: Turn | None = None) -> None:
        """Hand one message to the intake, unless it is a copy of our own outbound mail, one the views hold
        already (read again after a UIDVALIDITY change), or refused by the organization's sender rules;
        its events go on the log in its `turn`."""
        headers = BytesHeaderParser(policy=policy()).parsebytes(raw)
        ids = _MSG_ID.findall(header(headers, "Message-ID"))
        message_id = token(ids[0]) if ids else None  # as the intake reads it
        target = self.account.target
        known = message_id and await self.pool.fetchval(
            """SELECT direction FROM messages WHERE org_id = $1 AND rfc_message_id = $2
                  AND (direction = 'outbound' OR identity_id = $3) ORDER BY direction DESC LIMIT 1""",
            target.org_id, message_id, target.identity_id,
        )  # fmt: skip
        if known:  # a copy of one we sent, or one the views hold already (read again, or by another way)
            MESSAGES.labels("own" if known == "outbound" else "known").inc()
            return
        ours = _OURS.match(message_id or "")
        if ours and await self.pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM threads WHERE org_id = $1 AND refs && ARRAY[$2::text])",
            target.org_id, message_id,
        ):  # fmt: skip
            MESSAGES.labels("own").inc()  # one of ours the views do not show yet
            return
        return_path = parseaddr(header(headers, "Return-Path"))[1]
        sender = one_line(return_path or parseaddr(header(headers, "From"))[1], MAX_TOKEN)
        if not await screened(self.pool, [target], sender, self.account.email, "imap"):
            MESSAGES.labels("refused").inc()
            return
        try:
            await self.intake.keep(
                raw, sender, {self.account.email.lower(): [target]},
                origin=f"imap:{message_id}" if message_id else None, turn=turn,
            )  # fmt: skip
        except Refused:
            MESSAGES.labels("refused").inc()
            return
        except Unacceptable as exc:  # the same bytes would be refused on every read: passed over, recorded
            MESSAGES.labels("unacceptable").inc()
            self.log.warning("a message in the mailbox cannot be kept; passed over", folder=folder, uid=uid,
                             rfc_message_id=message_id, reason=exc.reason)  # fmt: skip
            return
        MESSAGES.labels("ingested").inc()
        self.log.debug("message read", folder=folder, uid=uid, rfc_message_id=message_id)

    # --- what the API shows -----------------------------------------------------------------------------

    async def show(self, state: str, error: str | None = None, synced: bool = False) -> None:
        """The mailbox's sync state, unless its IMAP account changed since this session began."""
        await self.pool.execute(
            """UPDATE mailboxes SET sync_state = $3, sync_error = $4, sync_worker = $5,
                      synced_at = CASE WHEN $6 THEN now() ELSE synced_at END
                WHERE id = $1 AND imap_password = $2""",
            self.account.target.mailbox_id, self.account.sealed, state, error and error[:1000], self.worker,
            synced,
        )  # fmt: skip
