"""An intake fuzz run against the real stack: hypothesis writes hostile messages (MIME structure and
nesting, file names, charsets and transfer encodings, addresses, Message-IDs, header counts, NUL,
undecodable bytes, encoded words) and hands each to the inbound server over SMTP, for about 40 s.

Every message is either answered 250 and then stored (read back through the API) or refused for good
(5xx): never 4xx (the sender would retry for days), never 250 and then lost. Throughout, another
organization sends normally, and each of its sends reaches its relay within CANARY_WITHIN_S."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from dataclasses import dataclass

import aiosmtplib
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import REPORT, Api, Relay, eventually
from tests.integration.test_intake import CANARY_WITHIN_S, new_canary
from tests.integration.test_mailboxes import new_mailbox

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

FUZZ_FOR_S = 40.0  # delivering; then at most STORED_WITHIN_S for the last ones to be readable
STORED_WITHIN_S = 20.0

# --- what a stranger may write ------------------------------------------------------------------------

NASTY = [
    b"\x00", b"a\x00b", b"\xff\xfe", b"\xed\xa0\x80", b"\xc3", b"\xc3\xa9", "jos\u00e9".encode(), b"%00",
    b"%0D%0A", b"\x1b[31m", b"\x7f", b"\xc2\x85", "\u2028".encode(), "\U0001f600".encode(), b"\\", b'"',
    b"<>", b"(((((((((((((((((((((((((((((((((((((((((", b"=?utf-8?b?AA==?=", b"=?utf-8?q?a=00b?=",
    b"=?x-unknown?q?abc?=", b"=?utf-8?b?7aCA?=", b"=?utf-7?q?+2D3dAA-?=", b"=?utf-8?q?=0D=0ASet-Cookie:_x?=",
    b"x" * 300, b"../../etc/passwd", b"con.txt", b"run.bat.", b"a\tb", b"", b" ", b".", b"..",
]  # fmt: skip
CHARSETS = ["utf-8", "us-ascii", "iso-8859-1", "utf-7", "utf-16", "x-unknown", "", "koi8-r", "shift_jis",
            "utf-8\x00", "cp1252", "gb18030", '"', "unicode-1-1-utf-7"]  # fmt: skip
ENCODINGS = ["7bit", "8bit", "base64", "quoted-printable", "binary", "x-uuencode", "bogus", ""]
LEAF_TYPES = ["text/plain", "text/html", "application/octet-stream", "application/pdf", "image/svg+xml",
              "message/rfc822", "message/delivery-status", "text/rfc822-headers", "message/feedback-report",
              "x/y", "text", "", "text/plain; format=flowed"]  # fmt: skip
MULTIPART = ["mixed", "alternative", "related", "digest", "report; report-type=delivery-status",
             "report; report-type=feedback-report", "signed", "x-unknown"]  # fmt: skip

nasty = st.sampled_from(NASTY)
text = st.text(max_size=40).map(str.encode)
word = st.one_of(nasty, text, st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")))
value = st.lists(word, min_size=0, max_size=4).map(b"".join)


@st.composite
def address(draw) -> bytes:
    local = draw(st.one_of(value, st.just(b"ana"), st.just("jos\u00e9".encode())))
    domain = draw(st.one_of(st.just(b"example.test"), value, st.just("\u00e9xample.test".encode())))
    shape = draw(st.integers(0, 4))
    if shape == 0:
        return local + b"@" + domain
    if shape == 1:
        return b'"' + draw(value) + b'" <' + local + b"@" + domain + b">"
    if shape == 2:
        return draw(value) + b" <" + local + b"@" + domain + b"> (" + draw(value) + b")"
    if shape == 3:
        return (
            b"=?utf-8?b?"
            + draw(st.binary(max_size=20)).hex().encode()
            + b"?= <"
            + local
            + b"@"
            + domain
            + b">"
        )
    return draw(value)


@st.composite
def file_name(draw) -> bytes:
    name = draw(value) + draw(st.sampled_from([b".txt", b".pdf", b".html", b".svg", b".exe", b"", b"."]))
    shape = draw(st.integers(0, 4))
    if shape == 0:
        return b'; filename="' + name + b'"'
    if shape == 1:
        pct = "".join(f"%{c:02X}" for c in name).encode()
        charset = draw(st.sampled_from(CHARSETS)).encode()
        return b"; filename*=" + charset + b"''" + pct
    if shape == 2:
        return b"; filename*0*=utf-8''" + b"a%00%FF" + b"; filename*1=" + name
    if shape == 3:
        return b"; filename=" + name
    return b""


@dataclass
class Part:
    headers: list[bytes]
    body: bytes


def render(part: Part | tuple, depth: int, boundary_seed: int, bad_close: bool) -> tuple[list[bytes], bytes]:
    """Headers and body of a part (a list: a multipart of those parts)."""
    if isinstance(part, Part):
        return part.headers, part.body
    subtype, children = part
    boundary = f"b{depth}_{boundary_seed}".encode()
    body = b"preamble\r\n"
    for child in children:
        headers, inner = render(child, depth + 1, boundary_seed, bad_close)
        body += (
            b"--" + boundary + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + inner + b"\r\n"
        )
    if not bad_close:
        body += b"--" + boundary + b"--\r\n"
    return [b"Content-Type: multipart/" + subtype + b'; boundary="' + boundary + b'"'], body


@st.composite
def leaf(draw) -> Part:
    kind = draw(st.sampled_from(LEAF_TYPES)).encode()
    charset = draw(st.sampled_from(CHARSETS)).encode()
    headers = [b"Content-Type: " + kind + (b"; charset=" + charset if draw(st.booleans()) else b"")]
    if cte := draw(st.sampled_from(ENCODINGS)):
        headers.append(b"Content-Transfer-Encoding: " + cte.encode())
    disposition = draw(st.sampled_from([b"", b"attachment", b"inline", b"x"]))
    if disposition or draw(st.booleans()):
        headers.append(b"Content-Disposition: " + (disposition or b"attachment") + draw(file_name()))
    lines = draw(st.lists(st.one_of(value, st.binary(max_size=80)), max_size=6))
    body = b"\r\n".join(line.replace(b"\r", b"").replace(b"\n", b"") for line in lines)
    if kind == b"message/rfc822" and draw(st.booleans()):
        body = b"From: " + draw(address()) + b"\r\nSubject: " + draw(value) + b"\r\n\r\n" + body
    if kind == b"message/delivery-status":
        body = (b"Reporting-MTA: dns; x\r\n\r\nFinal-Recipient: rfc822; " + draw(address())
                + b"\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; " + draw(value) + b"\r\n")  # fmt: skip
    return Part(headers, body)


structure = st.recursive(
    leaf(),
    lambda children: st.tuples(st.sampled_from(MULTIPART).map(str.encode), st.lists(children, max_size=5)),
    max_leaves=12,
)


message_id = st.one_of(
    st.uuids().map(lambda u: f"<{u.hex}@fuzz.example.test>".encode()),
    value.map(lambda v: b"<" + v + b">"),
    st.just(b"<" + b"x" * 900 + b">"),
)


@st.composite
def message(draw, recipient: str) -> bytes:
    """One hostile message for `recipient`."""
    headers = [
        b"From: " + b", ".join(draw(st.lists(address(), min_size=0, max_size=3))),
        b"To: " + recipient.encode() + b", " + b", ".join(draw(st.lists(address(), max_size=3))),
        b"Subject: " + draw(value),
        b"Message-ID: " + draw(message_id),
        b"In-Reply-To: <" + draw(value) + b">",
        b"References: " + b"\r\n ".join(b"<" + w + b"@x>" for w in draw(st.lists(value, max_size=150))),
        b"Reply-To: " + draw(address()),
        b"Date: " + draw(value),
        b"MIME-Version: 1.0",
    ]
    extra = draw(st.sampled_from([0, 0, 0, 3, 20, 999, 1000, 1001, 1200]))
    headers += [b"X-Filler-%d: %s" % (i, draw(value) if i < 3 else b"x") for i in range(extra)]
    shape = draw(st.integers(0, 9))
    if shape == 0:  # deeply nested: around the limit, or far beyond it
        depth = draw(st.sampled_from([31, 32, 33, 34, 40, 3000]))
        part_headers = [b"Content-Type: multipart/mixed; boundary=b0"]
        body = b"".join(b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
                        for i in range(depth - 1))  # fmt: skip
        body += b"--b%d\r\nContent-Type: text/plain\r\n\r\ndeep" % (depth - 1)
        body += b"".join(b"\r\n--b%d--" % i for i in reversed(range(depth)))
        return b"\r\n".join(headers + part_headers) + b"\r\n\r\n" + body + b"\r\n"
    if shape == 1:  # parts: around the limit
        count = draw(st.sampled_from([498, 499, 500, 501, 520]))
        tree: Part | tuple = (b"mixed", [Part([b"Content-Type: text/plain",
                                               b'Content-Disposition: attachment; filename="f.txt"'], b"x")] * count)  # fmt: skip
    else:
        tree = draw(structure)
    part_headers, body = render(tree, 0, draw(st.integers(0, 99)), bad_close=draw(st.integers(0, 9)) == 0)
    return b"\r\n".join(headers + part_headers) + b"\r\n\r\n" + body + b"\r\n"


async def _complete(found, count: int) -> bool:
    return len(await found) == count


# --- the run ----------------------------------------------------------------------------------------


@dataclass
class Outcome:
    raw: bytes
    code: int
    reply: str


async def hand_over(client: aiosmtplib.SMTP, raw: bytes, recipient: str) -> Outcome:
    try:
        _, reply = await client.sendmail("fuzz@example.test", [recipient], raw)
        return Outcome(raw, 250, reply)
    except aiosmtplib.SMTPResponseException as exc:
        return Outcome(raw, exc.code, exc.message)


async def test_hostile_messages_are_stored_or_refused_for_good_and_hold_no_one_up(
    api: Api, operator: Api, relay: Relay, relay_factory, inbound: int, db
) -> None:
    """~40 s of generated hostile mail over SMTP: each is 250 and readable, or 5xx; none 4xx, none lost;
    another organization's sends reach their relay within 2 s throughout."""
    canary = await new_canary(operator, relay_factory)
    recipient = await new_mailbox(api, relay)
    mailbox_identity = await db.fetchval(
        "SELECT identity_id FROM mailboxes WHERE lower(email) = $1 AND deleted_at IS NULL", recipient
    )
    generated: queue.Queue[bytes] = queue.Queue(maxsize=8)
    stop = threading.Event()

    class Enough(Exception):
        """The run's time is up: hypothesis stops generating."""

    @settings(max_examples=100_000, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(message(recipient))
    def generate(raw: bytes) -> None:
        while not stop.is_set():
            try:
                return generated.put(raw, timeout=0.1)
            except queue.Full:
                continue
        raise Enough

    def writer() -> None:
        with contextlib.suppress(BaseException):  # Enough, as hypothesis re-raises it
            generate()

    async def sing(until: asyncio.Event) -> None:
        while not until.is_set():
            await canary.send()
            await asyncio.sleep(0.3)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    done = asyncio.Event()
    singing = asyncio.create_task(sing(done))
    outcomes: list[Outcome] = []
    deadline = time.monotonic() + FUZZ_FOR_S
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=inbound, timeout=30)
    await client.connect()
    try:
        while time.monotonic() < deadline and thread.is_alive():
            try:
                raw = await asyncio.to_thread(generated.get, True, 1.0)
            except queue.Empty:
                continue
            outcome = await hand_over(client, raw, recipient)
            outcomes.append(outcome)
            if outcome.code >= 400:  # after a refused DATA, a fresh connection
                client.close()
                client = aiosmtplib.SMTP(hostname="127.0.0.1", port=inbound, timeout=30)
                await client.connect()
    finally:
        stop.set()
        client.close()
        await asyncio.to_thread(thread.join, 10)

    temporary = [o for o in outcomes if 400 <= o.code < 500]
    assert not temporary, [(o.code, o.reply, o.raw[:3000]) for o in temporary[:3]]
    accepted = {o.reply.rpartition(" ")[2]: o for o in outcomes if o.code == 250}
    refused = [o for o in outcomes if o.code >= 500]

    async def stored() -> dict[str, str]:
        rows = await db.fetch(
            """SELECT id, left(raw_sha256, 16) AS queued FROM messages
                WHERE identity_id = $1 AND direction = 'inbound' AND left(raw_sha256, 16) = ANY($2::text[])""",
            mailbox_identity, list(accepted),
        )  # fmt: skip
        return {r["queued"]: str(r["id"]) for r in rows}

    try:
        await eventually(lambda: _complete(stored(), len(accepted)), timeout=STORED_WITHIN_S, interval=0.5)
    except AssertionError:
        lost = [o for q, o in accepted.items() if q not in await stored()]
        raise AssertionError(
            f"{len(lost)} answered 250 and not stored, e.g. {lost[0].raw[:3000]!r}"
        ) from None
    finally:
        done.set()
        await singing
    found = await stored()
    for message_id in list(found.values())[:: max(1, len(found) // 25)]:  # read back through the API
        status, body, _ = await api.call("GET", f"/mailboxes/{recipient}/messages/{message_id}")
        assert status == 200, body
    assert len(outcomes) >= 50, f"only {len(outcomes)} messages in {FUZZ_FOR_S} s"
    assert canary.latencies and max(canary.latencies) < CANARY_WITHIN_S, canary.latencies
    REPORT.append(
        f"intake fuzz: {len(outcomes)} messages, {len(accepted)} distinct stored, {len(refused)} refused "
        f"({sorted({o.code for o in refused})}); canary sends {len(canary.latencies)}, "
        f"max {max(canary.latencies):.2f} s"
    )
