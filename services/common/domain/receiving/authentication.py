"""Who sent a received message, as far as the receiving server can tell: SPF (pyspf: the connecting
address against the envelope sender's domain), DKIM (dkimpy: the first signature), and DMARC (the
From domain's policy record, passed when an SPF or DKIM pass is aligned with it: the same
organizational domain, per the Public Suffix List).

Every lookup is bounded by `timeout`; a check that cannot be made is `none` (nothing to check) or
`temperror` (DNS did not answer), never a reason to refuse or hold up the mail. Results as RFC 8601
words, shown on each received message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email.utils import getaddresses

import dkim
import dns.exception
import dns.resolver
import spf
from publicsuffixlist import PublicSuffixList

from schemas.events import Authentication

_PSL = PublicSuffixList()

TxtLookup = Callable[[str], list[bytes] | None]  # a name's TXT records; None: DNS did not answer


def dns_txt(timeout: float) -> TxtLookup:
    def lookup(name: str) -> list[bytes] | None:
        try:
            answer = dns.resolver.resolve(name, "TXT", lifetime=timeout)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
            return []
        except dns.exception.DNSException:
            return None
        return [b"".join(r.strings) for r in answer]

    return lookup


def organizational(domain: str) -> str:
    return (_PSL.privatesuffix(domain.lower().rstrip(".")) or domain).lower()


def check_spf(ip: str | None, mail_from: str, helo: str, timeout: float) -> tuple[str, str]:
    """SPF's result and the domain it was checked for (the envelope sender's, else the HELO name's)."""
    domain = mail_from.rpartition("@")[2] if "@" in mail_from else helo
    if not ip or not domain:
        return "none", domain
    try:
        result, _, _ = spf.query(ip, mail_from or f"postmaster@{helo}", helo, timeout=timeout).check()
    except Exception:  # a library's verdict on untrusted input and DNS: without one, there is none
        return "temperror", domain
    return str(result), domain


def check_dkim(raw: bytes, txt: TxtLookup) -> tuple[str, str]:
    """The first DKIM signature's result and its signing domain (d=)."""
    if not re.search(rb"(?im)^dkim-signature:", raw):
        return "none", ""
    unanswered = False

    def dnsfunc(name, timeout=5):
        nonlocal unanswered
        records = txt(name.decode() if isinstance(name, bytes) else name)
        unanswered = unanswered or records is None
        return b"".join(records or []) or None

    verifier = dkim.DKIM(raw)
    try:
        ok = verifier.verify(dnsfunc=dnsfunc)
    except dkim.ValidationError as exc:  # the signature does not match the message (or cannot be read)
        return ("fail" if "mismatch" in str(exc) else "permerror"), ""
    except Exception:
        return ("temperror" if unanswered else "permerror"), ""
    domain = (verifier.domain or b"").decode(errors="replace")
    return ("pass" if ok else "temperror" if unanswered else "fail"), domain


def check_dmarc(
    from_header: str, spf_result: tuple[str, str], dkim_result: tuple[str, str], txt: TxtLookup
) -> str:
    addresses = [a for _, a in getaddresses([from_header]) if "@" in a]
    if len(addresses) != 1:
        return "none"
    domain = addresses[0].rpartition("@")[2].lower()
    records = txt(f"_dmarc.{domain}")
    if records == [] and organizational(domain) != domain:
        records = txt(f"_dmarc.{organizational(domain)}")
    if records is None:
        return "temperror"
    if not any(r.lower().startswith(b"v=dmarc1") for r in records):
        return "none"
    aligned = [d for result, d in (spf_result, dkim_result) if result == "pass" and d]
    return "pass" if any(organizational(d) == organizational(domain) for d in aligned) else "fail"


def authenticate(
    raw: bytes, *, ip: str | None, mail_from: str, helo: str, timeout: float, txt: TxtLookup | None = None
) -> Authentication:
    txt = txt or dns_txt(timeout)
    spf_result = check_spf(ip, mail_from, helo, timeout)
    dkim_result = check_dkim(raw, txt)
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].decode(errors="replace")
    from_header = " ".join(m.group(1) for m in re.finditer(r"(?im)^from:(.*(?:\n[ \t].*)*)", head))
    return Authentication(
        spf=spf_result[0], dkim=dkim_result[0], dmarc=check_dmarc(from_header, spf_result, dkim_result, txt)
    )
