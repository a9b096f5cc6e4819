"""The blob store: bytes stored once under their sha256 and referenced from events by a BlobRef (hash,
size, type), so events stay small however large an attachment or a raw message is.

`BlobStore` is what writers (the ingress for attachments, dispatch for raw MIME) and readers use;
`PostgresBlobs` is the default backend: it needs nothing beside the database every service already
has and works for any number of processes on any number of machines. Puts are idempotent (the same
bytes are the same blob), and every read is checked against its hash.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import asyncpg

from schemas.events import BlobRef


class BlobMissing(LookupError):
    """No blob with this hash is stored."""


class BlobCorrupt(ValueError):
    """The stored bytes no longer hash to their name."""


class BlobStore(Protocol):
    async def put(self, data: bytes, content_type: str) -> BlobRef: ...
    async def get(self, sha256: str) -> bytes: ...


def ref_of(data: bytes, content_type: str) -> BlobRef:
    return BlobRef(sha256=hashlib.sha256(data).hexdigest(), size=len(data), content_type=content_type)


def checked(sha256: str, data: bytes) -> bytes:
    if hashlib.sha256(data).hexdigest() != sha256:
        raise BlobCorrupt(f"blob {sha256} does not match its hash")
    return data


class PostgresBlobs:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    async def put(self, data: bytes, content_type: str) -> BlobRef:
        ref = ref_of(data, content_type)
        await self.pool.execute(
            "INSERT INTO blobs (sha256, size, data) VALUES ($1, $2, $3) ON CONFLICT (sha256) DO NOTHING",
            bytes.fromhex(ref.sha256),
            ref.size,
            data,
        )
        return ref

    async def get(self, sha256: str) -> bytes:
        data = await self.pool.fetchval("SELECT data FROM blobs WHERE sha256 = $1", bytes.fromhex(sha256))
        if data is None:
            raise BlobMissing(sha256)
        return checked(sha256, data)
