"""Short-lived signed links to a message's files and raw form, for every dialect: the link is the
authority (no API key: a browser or a plain HTTP client fetches it), it names the message, the blob and
the file's name, and it expires."""

from __future__ import annotations

import json
import re
import time
from urllib.parse import quote
from uuid import UUID

from aiohttp import web

from services.common.domain import signed
from services.common.domain.blobs import BlobMissing
from services.ingress.context import Context, ctx
from services.ingress.http import ApiError, Call, route

TTL_S = 15 * 60
RAW_TYPE = "message/rfc822"


def download_key(c: Context) -> bytes:
    key = signed.key_for(c.settings, "download")
    if key is None:
        raise ApiError(
            503, "unavailable", "downloads need SENDSTREAM_SECRET_KEYS or SENDSTREAM_UNSUBSCRIBE_SECRET"
        )
    return key


def link(c: Context, message_id: UUID, sha256: str, name: str) -> tuple[str, int]:
    """A link to the message's file (or raw form) of this blob and name, and when it expires (epoch s)."""
    expires = int(time.time()) + TTL_S
    claims = json.dumps([str(message_id), sha256, name, expires], separators=(",", ":")).encode()
    return f"{c.settings.public_base_url.rstrip('/')}/downloads/{signed.sign(download_key(c), claims)}", expires


@route(
    "GET", "/downloads/{token}", scope=None, tag="downloads", errors=(403, 404),
    summary="A message's file or raw form behind a signed download link (the link is the authority; it expires)",
)  # fmt: skip
async def download(call: Call) -> web.StreamResponse:
    c = ctx(call)
    claims = signed.opened(download_key(c), call.param("token"))
    if claims is None:
        raise ApiError(403, "forbidden", "this download link is not valid")
    message_id, sha256, name, expires = json.loads(claims)
    if time.time() > expires:
        raise ApiError(403, "forbidden", "this download link has expired")
    row = await c.pool.fetchrow(
        "SELECT attachments, raw_sha256 FROM messages WHERE id = $1 AND deleted_at IS NULL", UUID(message_id)
    )
    kind = None
    if row and row["raw_sha256"] == sha256:
        kind = RAW_TYPE
    elif row:
        kind = next((a["content_type"] for a in row["attachments"] if a["sha256"] == sha256 and a["filename"] == name), None)
    if kind is None:
        raise ApiError(404, "not_found", "Attachment not found")
    try:
        data = await c.blobs.get(sha256)
    except BlobMissing:
        raise ApiError(404, "not_found", "Attachment not found") from None
    return web.Response(body=data, headers=download_headers(name, kind))


# Types a browser would run or render as a page of our origin: served as bytes to save, never shown.
_ACTIVE = re.compile(r"^(text/(html|xml|javascript|ecmascript|xsl)|image/svg|application/(xhtml|xml|javascript|"
                     r"ecmascript|x-javascript|rdf|mathml|vnd\.wap)|multipart/x-mixed-replace)|\+xml$")  # fmt: skip
_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")


def download_headers(name: str, content_type: str) -> dict[str, str]:
    """A received file's response headers: always a download (`attachment`, a name with no control
    character in it, the whole name in RFC 6266's `filename*`), never sniffed, never run: an active type
    (HTML, SVG, XML, script) or one that is no plain media type goes as application/octet-stream, and
    any page is sandboxed (CSP) should a browser show it anyway."""
    kind = content_type.strip().lower()
    if not _MEDIA_TYPE.match(kind) or _ACTIVE.search(kind):
        kind = "application/octet-stream"
    fallback = "".join(c if " " <= c < "\x7f" and c not in '"\\;' else "_" for c in name) or "download"
    return {
        "Content-Type": kind,
        "Content-Disposition": f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox; default-src 'none'",
        "Cache-Control": "private, no-store",
    }
