"""Message bodies too large to travel in events: kept in the blob store, referenced from `Content`.

The ingress moves a body over `SENDSTREAM_BODY_INLINE_MAX_BYTES` there before it publishes the request
(`offload`); the consumers that need the words read it back: dispatch to render the message
(`inline`), the projections to show and index it (`texts_of`; their audit trail keeps the event as
it is on the log). Everything else passes the reference along untouched, so each
body is stored once however many events mention it.
"""

from __future__ import annotations

from collections.abc import Collection
from uuid import UUID

from schemas.envelope import Envelope
from schemas.events import Content
from services.common.domain.blobs import BlobStore

_TYPES = {"text": "text/plain; charset=utf-8", "html": "text/html; charset=utf-8"}


async def offload(blobs: BlobStore, content: Content, limit: int, orgs: Collection[UUID]) -> Content:
    """`content` with each body over `limit` bytes (UTF-8) moved to the blob store, for `orgs`."""
    moved = {}
    for name, content_type in _TYPES.items():
        body = getattr(content, name)
        if body is not None and len(body) * 4 > limit and len(data := body.encode()) > limit:
            moved |= {name: None, f"{name}_blob": await blobs.put(data, content_type, orgs)}
    return content.model_copy(update=moved) if moved else content


async def inline(blobs: BlobStore, content: Content) -> Content:
    """`content` with its bodies back in place."""
    if not content.offloaded:
        return content
    back = {}
    for name in _TYPES:
        if (ref := getattr(content, f"{name}_blob")) is not None:
            back |= {name: (await blobs.get(ref.sha256)).decode(), f"{name}_blob": None}
    return content.model_copy(update=back)


def content_of(event: Envelope) -> Content | None:
    """What the sender wrote, where an event carries it: a request's or a decision's `content`, or the
    `content` of the message a received-mail event carries."""
    payload = event.payload
    content = getattr(payload, "content", None) or getattr(getattr(payload, "message", None), "content", None)
    return content if isinstance(content, Content) else None


async def texts_of(blobs: BlobStore, events: list[Envelope]) -> dict[str, str]:
    """The bodies kept in the blob store that `events` refer to, by sha256."""
    refs = {
        ref.sha256
        for e in events
        if (content := content_of(e)) is not None
        for ref in (content.text_blob, content.html_blob)
        if ref is not None
    }
    return {sha: (await blobs.get(sha)).decode() for sha in refs}
