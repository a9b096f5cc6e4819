"""SPF, DKIM and DMARC of received mail (services/common/domain/receiving/authentication.py), with the real
libraries (pyspf, dkimpy) and the DNS records they would find handed to them."""

from __future__ import annotations

import base64
from types import SimpleNamespace

import dkim
import pytest
import spf
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.common.domain.receiving.authentication import authenticate
from services.common.settings import InboundSettings
from services.inbound.app import Handler

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE = KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())  # fmt: skip
PUBLIC = KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
)
MESSAGE = (b"From: Ana <ana@example.test>\r\nTo: desk@agents.example.test\r\nSubject: Hello\r\n"
           b"Message-ID: <m1@example.test>\r\n\r\nHello there.\r\n")  # fmt: skip
RECORDS = {
    "s1._domainkey.example.test": [b"v=DKIM1; k=rsa; p=" + base64.b64encode(PUBLIC)],
    "_dmarc.example.test": [b"v=DMARC1; p=reject"],
    "example.test": [b"v=spf1 ip4:192.0.2.7 -all"],
}


def txt(name: str) -> list[bytes] | None:
    return RECORDS.get(name.rstrip("."), [])


@pytest.fixture(autouse=True)
def spf_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """pyspf does its own lookups: hand it the same records."""

    def lookup(name, qtype, tcpfallback=True, timeout=30):
        return [((name, qtype), [r]) for r in RECORDS.get(name.rstrip("."), [])] if qtype == "TXT" else []

    monkeypatch.setattr(spf, "DNSLookup", lookup)


def signed(message: bytes) -> bytes:
    return (
        dkim.sign(message, b"s1", b"example.test", PRIVATE, include_headers=[b"from", b"to", b"subject"])
        + message
    )


def test_a_signed_message_from_an_allowed_address_passes_all_three() -> None:
    result = authenticate(signed(MESSAGE), ip="192.0.2.7", mail_from="ana@example.test", helo="mx.example.test",
                          timeout=1, txt=txt)  # fmt: skip
    assert (result.spf, result.dkim, result.dmarc) == ("pass", "pass", "pass")


def test_a_forged_sender_fails_spf_and_dmarc_and_an_altered_body_fails_dkim() -> None:
    altered = signed(MESSAGE).replace(b"Hello there.", b"Send the money.")
    result = authenticate(altered, ip="203.0.113.9", mail_from="ana@example.test", helo="evil.test",
                          timeout=1, txt=txt)  # fmt: skip
    assert (result.spf, result.dkim, result.dmarc) == ("fail", "fail", "fail")


def test_nothing_to_check_is_none() -> None:
    message = MESSAGE.replace(b"ana@example.test", b"bo@unknown.test")
    result = authenticate(message, ip="192.0.2.7", mail_from="bo@unknown.test", helo="mx.unknown.test",
                          timeout=1, txt=txt)  # fmt: skip
    assert (result.spf, result.dkim, result.dmarc) == ("none", "none", "none")


def test_dns_that_does_not_answer_is_temperror_not_a_refusal() -> None:
    result = authenticate(signed(MESSAGE), ip="192.0.2.7", mail_from="ana@example.test", helo="mx.example.test",
                          timeout=1, txt=lambda name: None)  # fmt: skip
    assert (result.dkim, result.dmarc) == ("temperror", "temperror")


async def test_the_smtp_handler_checks_the_sender_before_keeping_the_message() -> None:
    """The inbound server's DATA hook hands the checks' results to the intake with the message."""
    kept = {}

    class Intake:
        async def keep(self, data, sender, recipients, authentication=None):
            kept.update(data=data, authentication=authentication)
            return "q1"

    settings = InboundSettings(inbound_authenticate=True, inbound_dns_timeout_s=0.5)
    handler = Handler(settings, None, Intake())
    session = SimpleNamespace(
        peer=("192.0.2.7", 40000), host_name="mx.unknown.test", targets={"d@x.test": []}
    )
    envelope = SimpleNamespace(
        original_content=MESSAGE, mail_from="ana@unknown.invalid", rcpt_tos=["d@x.test"]
    )
    assert (await handler.handle_DATA(None, session, envelope)).startswith("250")
    assert kept["data"] == MESSAGE and kept["authentication"].dkim == "none"  # unsigned: nothing to check
