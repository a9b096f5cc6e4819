"""Inbound SMTP: mail for every hosted identity and mailbox address, kept, then on the log.

An aiosmtpd server (default 127.0.0.1:2525; STARTTLS when given a certificate). It refuses unknown
recipients at RCPT (550), more than `inbound_max_recipients` (452), messages over
`inbound_max_message_bytes` (552), and disconnects idle clients. It answers 250 to DATA only once the
raw bytes (and each attachment) are in the blob store and a `MessageArrived` per receiving identity
is on the log (acks=all); anything failing before that is a 451, and the sender's MTA tries again.

A message delivered twice (a client that never heard our 250) is the same bytes: the same blob, and
events with the same ids, which every consumer drops the second time. Decide then threads each
arrival into its conversation (services/decide/received.py).
"""

from __future__ import annotations

import asyncio
import ssl

import asyncpg
import structlog
from aiosmtpd.smtp import SMTP, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope

from mail.parse import MAX_TOKEN, Unacceptable, one_line
from schemas.events import Authentication
from services.common import db
from services.common.broker import ensure_topics, make_broker
from services.common.domain.blobs import blob_store
from services.common.domain.receiving.authentication import authenticate
from services.common.domain.receiving.intake import RECEIVED, Intake, Refused, Target, screened, targets_of
from services.common.logging import configure_logging
from services.common.service import run, stop_event
from services.common.settings import InboundSettings

log = structlog.get_logger("sendstream.inbound")


class Handler:
    """aiosmtpd's hooks: recipients checked at RCPT, the message kept at DATA."""

    def __init__(self, settings: InboundSettings, pool: asyncpg.Pool, intake: Intake):
        self.settings, self.pool, self.intake = settings, pool, intake

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: SmtpEnvelope, address: str, rcpt_options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= self.settings.inbound_max_recipients:
            return "452 4.5.3 Too many recipients"
        address = one_line(address, MAX_TOKEN)
        try:
            hosted = await targets_of(self.pool, address)
            targets = await screened(self.pool, hosted, sender_of(envelope), address, "rcpt")
        except Exception as exc:
            log.warning("recipient lookup failed", error=repr(exc))
            return "451 4.3.0 Temporary failure, try again later"
        if not hosted:
            RECEIVED.labels("unknown_recipient").inc()
            return f"550 5.1.1 <{address}>: no such mailbox here"
        if not targets:
            return f"550 5.7.1 <{address}>: the recipient does not accept mail from this sender"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.append(rcpt_options)
        session.targets = {**getattr(session, "targets", {}), address: targets}  # type: ignore[attr-defined]
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        known: dict[str, list[Target]] = getattr(session, "targets", {})
        recipients = {a: known[a] for a in envelope.rcpt_tos if a in known}
        data, sender = envelope.original_content or b"", sender_of(envelope)
        try:
            checked = await self.authenticated(session, data, sender)
            queued = await self.intake.keep(data, sender, recipients, authentication=checked)
        except Refused as exc:
            return f"550 5.7.1 the recipients do not accept mail from {exc}"
        except Unacceptable as exc:
            RECEIVED.labels("refused_for_good").inc()
            log.info("a received message was refused for good", reply=exc.reply, size=len(data))
            return exc.reply
        except Exception as exc:
            RECEIVED.labels("failed").inc()
            log.error("a received message could not be kept; the client is told to retry", error=repr(exc))
            return "451 4.3.0 Temporary failure, try again later"
        finally:
            session.targets = {}  # type: ignore[attr-defined]
        RECEIVED.labels("accepted").inc()
        return f"250 2.0.0 OK: queued as {queued}"

    async def authenticated(self, session: Session, data: bytes, sender: str) -> Authentication | None:
        """SPF, DKIM and DMARC of the message (DNS and signature checks, off the event loop); None when
        they are off. A check that fails on what a stranger sent is `temperror`, never a reason to refuse."""
        if not self.settings.inbound_authenticate:
            return None
        try:
            return await asyncio.to_thread(
                authenticate, data, ip=session.peer[0] if session.peer else None, mail_from=sender,
                helo=one_line(session.host_name or "", MAX_TOKEN), timeout=self.settings.inbound_dns_timeout_s,
            )  # fmt: skip
        except Exception as exc:
            log.warning("the sender could not be authenticated", error=repr(exc))
            return Authentication(spf="temperror", dkim="temperror", dmarc="temperror")


def sender_of(envelope: SmtpEnvelope) -> str:
    """The envelope sender, storable (aiosmtpd keeps bytes that are no UTF-8 as surrogate escapes)."""
    return one_line(envelope.mail_from or "", MAX_TOKEN)


def tls_context(settings: InboundSettings) -> ssl.SSLContext | None:
    if not settings.inbound_tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.inbound_tls_cert, settings.inbound_tls_key)
    return context


async def serve(settings: InboundSettings) -> None:
    pool = await db.create_pool(settings)
    await db.migrate(pool)
    await ensure_topics(settings)
    broker = make_broker(settings, client_id="inbound")
    await broker.connect()
    blobs = blob_store(settings, pool)
    await blobs.start()
    handler = Handler(settings, pool, Intake(settings, pool, broker, blobs))
    tls = tls_context(settings)

    def protocol() -> SMTP:
        return SMTP(
            handler, hostname=settings.inbound_hostname, data_size_limit=settings.inbound_max_message_bytes,
            timeout=settings.inbound_timeout_s, tls_context=tls, enable_SMTPUTF8=True, ident="sendstream",
        )  # fmt: skip

    server = await asyncio.get_running_loop().create_server(
        protocol, settings.inbound_host, settings.inbound_port, reuse_address=True
    )
    stop = stop_event()
    log.info(
        "inbound SMTP listening", host=settings.inbound_host, port=settings.inbound_port, starttls=bool(tls)
    )
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()
        await blobs.stop()
        await broker.stop()
        await pool.close()


def main() -> None:
    settings = InboundSettings()
    configure_logging(settings.log_level, settings.log_format, service="inbound")
    run(serve(settings), settings)
