"""Files a caller attaches to a message, for every dialect: checked, then stored once in the blob store.

Refused, each with a 400 naming the file (`Invalid`): a blocked type (by its name's extension, its
declared type, or what its bytes are: an executable stays one under any name), a declared type its
bytes contradict (where the bytes can tell: puremagic's signatures), and a set over the limits of
schemas/limits.py (25 MB of files; 10 MB for the whole message as composed for the relay).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from uuid import UUID

import puremagic

from mail import forward
from mail.compose import UnsendableMessage, compose
from schemas import dialects
from schemas.events import Attachment, Content
from schemas.limits import BLOCKED_EXTENSIONS, BLOCKED_TYPES, CALLER_ATTACHMENTS_MAX, FINAL_MIME_MAX, MB
from services.common.domain.blobs import BlobStore, ref_of
from services.ingress.core.errors import Invalid, TooLarge

# Declared types whose formats have a signature: a file declared as one of these whose bytes read as
# another format is refused (a PDF sent as image/png). Other declared types (text formats, the office
# formats' many names, application/octet-stream) are not judged by their bytes, except as executables.
_ZIP = "zip"  # any ZIP-based format: the signature cannot tell them apart
_SIGNED: dict[str, tuple[str, ...]] = {
    "application/pdf": ("application/pdf",),
    "image/png": ("image/png",),
    "image/jpeg": ("image/jpeg",),
    "image/gif": ("image/gif",),
    "image/webp": ("image/webp",),
    "image/bmp": ("image/bmp", "image/x-ms-bmp"),
    "image/tiff": ("image/tiff",),
    "video/mp4": ("video/mp4",),
    "application/gzip": ("application/gzip", "application/x-gzip"),
    "application/zip": (_ZIP,),
}
_ALIASES = {
    "image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png",
    "application/x-pdf": "application/pdf", "application/x-zip-compressed": "application/zip",
    "application/x-gzip": "application/gzip", "image/x-ms-bmp": "image/bmp",
}  # fmt: skip


@dataclass(frozen=True)
class Upload:
    """One attached file as a dialect received it; `field` names it in errors (`attachments[2]`)."""

    field: str
    filename: str
    content_type: str
    data: bytes

    @property
    def named(self) -> str:
        return f"{self.field} ({self.filename})"


def _sniffed(data: bytes) -> list[puremagic.PureMagicWithConfidence]:
    """What the bytes may be, most likely first (empty when their signature is not known)."""
    try:
        return puremagic.magic_string(data[:8192])
    except (puremagic.PureError, ValueError):
        return []


def _executable(sniffed: list[puremagic.PureMagicWithConfidence]) -> str | None:
    """What executable the bytes are, if they are one: by the likeliest match's extension or type, or
    by any match named an executable (a PE file matches many PE-based formats first: plug-ins,
    filters...). Not by any match's extension or type: Office 97 documents share their signature with
    .msi installers, and every ZIP-based format with .jar."""
    if sniffed and (
        sniffed[0].extension.lstrip(".").lower() in BLOCKED_EXTENSIONS
        or sniffed[0].mime_type in BLOCKED_TYPES
    ):
        return sniffed[0].name
    return next((m.name for m in sniffed if "executable" in m.name.lower() or "Mach-O" in m.name), None)


def _matches(declared: str, found: str) -> bool:
    if declared == _ZIP:
        return any(marker in found for marker in ("zip", "openxmlformats", "opendocument", "java-archive"))
    return found == declared


def receiving_name(filename: str) -> str:
    """The name a receiving system gives the file, by which it picks what runs it: Windows drops what
    follows a colon (an NTFS stream: `run.js::$DATA`) and trailing dots and spaces (`run.bat. `);
    compatibility forms are folded (a fullwidth dot and letters read as ASCII ones)."""
    name = unicodedata.normalize("NFKC", filename).partition(":")[0]
    return name.rstrip(" .\t\u00a0")


def check_file(upload: Upload) -> None:
    """Refuse one file that must not be sent: blocked, or not what it says it is."""
    name = receiving_name(upload.filename)
    extension = name.rpartition(".")[2].lower() if "." in name else ""
    if extension in BLOCKED_EXTENSIONS:
        raise Invalid(f"{upload.named}: files of type .{extension} are blocked")
    if upload.content_type in BLOCKED_TYPES:
        raise Invalid(f"{upload.named}: files of type {upload.content_type} are blocked")
    sniffed = _sniffed(upload.data)
    if executable := _executable(sniffed):
        raise Invalid(f"{upload.named}: the content is an executable ({executable}); such files are blocked")
    declared = _ALIASES.get(upload.content_type, upload.content_type)
    found = [m.mime_type for m in sniffed if m.mime_type]
    if declared in _SIGNED and found and not any(_matches(d, f) for d in _SIGNED[declared] for f in found):
        raise Invalid(f"{upload.named}: contentType is {upload.content_type} but the content is {found[0]}")


def check_carried(field: str, originals: list[Attachment], files: dict[str, bytes]) -> None:
    """Refuse a forward that would carry a received file that must not be sent (`field`: what carries it)."""
    for a in originals:
        check_file(Upload(field, a.filename, a.content_type, files[a.sha256]))


async def carry(
    blobs: BlobStore, originals: list[Attachment], callers: list[Attachment], files: dict[str, bytes], field: str
) -> list[Attachment]:
    """The original's files an inline forward carries, named clear of the caller's files (`callers`), their
    bytes added to `files`; refused (`Invalid`, naming `field`) if one must not be sent. BlobMissing if the
    store lost one."""
    carried = forward.renamed(originals, callers)
    for a in carried:
        files[a.sha256] = await blobs.get(a.sha256)
    check_carried(field, carried, files)
    return carried


def check_wrapped(field: str, raw: bytes) -> None:
    """Refuse a forward that would wrap a received message carrying a file that must not be sent: each part
    with a file name, at any depth (messages inside messages too)."""
    for part in message_from_bytes(raw, policy=policy.default).walk():
        if (filename := part.get_filename()) is None or part.is_multipart():
            continue
        try:
            data = part.get_payload(decode=True) or b""
        except Exception:  # undecodable: judged by its name and declared type alone
            data = b""
        check_file(Upload(field, filename, part.get_content_type(), data))


def check(uploads: list[Upload]) -> None:
    """Refuse a set of files that must not be sent: any file `check_file` refuses, or more than
    CALLER_ATTACHMENTS_MAX bytes in all (naming the file that crosses it)."""
    total = 0
    for upload in uploads:
        check_file(upload)
        total += len(upload.data)
        if total > CALLER_ATTACHMENTS_MAX:
            raise Invalid(
                f"{upload.named}: the attachments come to more than {CALLER_ATTACHMENTS_MAX // MB} MB "
                f"({total} bytes with this file)"
            )


def attachments_of(uploads: list[Upload]) -> tuple[list[Attachment], dict[str, bytes]]:
    """What the events carry for the files (names and blob references, never the bytes), and the
    bytes by hash."""
    found = [
        (Attachment(filename=u.filename, **ref_of(u.data, u.content_type).model_dump()), u) for u in uploads
    ]
    return [a for a, _ in found], {a.sha256: u.data for a, u in found}


def check_bodies(content: Content, limit: int) -> None:
    """Refuse (413) a caller's text or HTML body over `limit` bytes (SENDSTREAM_MAX_BODY_BYTES), in every
    dialect: a route that takes files takes a body far over that limit, for the files alone."""
    names = dialects.of(content.dialect).body_fields
    for field in ("text", "html"):
        body = getattr(content, field)
        if body is not None and len(body) > limit // 4 and (size := len(body.encode())) > limit:
            raise TooLarge(f"{names.get(field, field)}: {size} bytes, over the limit of {limit} bytes for a body")


def check_composed(from_addr: str, to: list[str], content: Content, files: dict[str, bytes]) -> None:
    """Refuse a message that would be over FINAL_MIME_MAX once composed (base64 makes files a third
    larger): composed here as dispatch will, with a Message-ID of the same length, unless its size is
    surely under the limit (a body's transfer encoding at most triples it)."""
    bodies = sum(len(b.encode()) for b in (content.text, content.html) if b)
    files_size = sum(a.size for a in content.attachments) + (content.forwarded.original.size
        if content.forwarded and content.forwarded.original else 0)  # fmt: skip
    if 3 * bodies + files_size * 1.4 + 64 * 1024 < FINAL_MIME_MAX:
        return
    placeholder = f"<{'0' * 36}@{from_addr.rpartition('@')[2]}>"
    try:
        size = len(compose(from_addr, to, content, placeholder, datetime.now(UTC), files))
    except UnsendableMessage as exc:
        raise Invalid(f"attachments: {exc}") from None
    if size > FINAL_MIME_MAX:
        culprit = (
            f"attachments ({max(content.attachments, key=lambda a: a.size).filename})"
            if content.attachments
            else "the message"
        )
        raise Invalid(
            f"{culprit}: the message would be {size} bytes once composed, over the "
            f"{FINAL_MIME_MAX // MB} MB limit of outgoing mail (attachments grow by a third in transit)"
        )


def attach(
    content: Content, uploads: list[Upload], from_addr: str, to: list[str]
) -> tuple[Content, dict[str, bytes]]:
    """The content with the files attached, and their bytes by hash for `store`; refused (`Invalid`)
    if a file or the composed message must not be sent."""
    if not uploads:
        return content, {}
    check(uploads)
    attachments, files = attachments_of(uploads)
    content = content.model_copy(update={"attachments": attachments})
    check_composed(from_addr, to, content, files)
    return content, files


async def store(
    blobs: BlobStore, attachments: list[Attachment], files: dict[str, bytes], org_id: UUID
) -> None:
    """Keep the files' bytes for the organization (a retry stores nothing new: the store is
    content-addressed)."""
    for a in attachments:
        await blobs.put(files[a.sha256], a.content_type, [org_id])
