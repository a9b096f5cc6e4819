"""The blob store's PostgreSQL backend, on real PostgreSQL: content-addressed, stored once, checked on read."""

from __future__ import annotations

import hashlib
import os

import asyncpg
import pytest

from services.common.blobs import BlobCorrupt, BlobMissing, PostgresBlobs

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_the_same_bytes_are_one_blob_named_by_their_hash(db: asyncpg.Pool) -> None:
    blobs = PostgresBlobs(db)
    data = os.urandom(3 * 1024 * 1024)  # an attachment-sized blob
    ref = await blobs.put(data, "application/pdf")
    assert (ref.sha256, ref.size, ref.content_type) == (
        hashlib.sha256(data).hexdigest(),
        len(data),
        "application/pdf",
    )
    assert await blobs.put(data, "application/octet-stream") == ref.model_copy(
        update={"content_type": "application/octet-stream"}
    )
    assert await db.fetchval("SELECT count(*) FROM blobs WHERE sha256 = $1", bytes.fromhex(ref.sha256)) == 1
    assert await blobs.get(ref.sha256) == data


async def test_a_missing_or_altered_blob_is_refused(db: asyncpg.Pool) -> None:
    blobs = PostgresBlobs(db)
    with pytest.raises(BlobMissing):
        await blobs.get(hashlib.sha256(os.urandom(8)).hexdigest())
    ref = await blobs.put(b"original bytes", "text/plain")
    await db.execute("UPDATE blobs SET data = 'tampered' WHERE sha256 = $1", bytes.fromhex(ref.sha256))
    with pytest.raises(BlobCorrupt):
        await blobs.get(ref.sha256)
