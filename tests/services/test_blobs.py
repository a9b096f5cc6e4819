"""The blob store's two backends against real servers: PostgreSQL, and an S3-compatible server (moto's,
started here as its own process). Content-addressed, stored once, checked on read, the same behaviour
behind one interface."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from devstack.infra import free_port, wait_for_port
from services.common.domain.blobs import (
    BlobCorrupt,
    BlobMissing,
    BlobStore,
    PostgresBlobs,
    S3Blobs,
    blob_store,
)
from services.common.settings import CommonSettings

pytestmark = pytest.mark.asyncio(loop_scope="session")

ORGS = [uuid.uuid4()]  # the organization each put is for


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible HTTP server (moto's), in its own process."""
    port = free_port()
    server = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port("127.0.0.1", port, 30, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def s3_settings(endpoint: str, bucket: str) -> CommonSettings:
    return CommonSettings(
        blob_store="s3", s3_endpoint_url=endpoint, s3_bucket=bucket, s3_access_key_id="test",
        s3_secret_access_key="test", s3_prefix="blobs/",
    )  # fmt: skip


@pytest_asyncio.fixture(loop_scope="session", params=["postgres", "s3"])
async def store(request, db: asyncpg.Pool, s3_endpoint: str) -> AsyncIterator[BlobStore]:
    if request.param == "postgres":
        yield PostgresBlobs(db)
        return
    settings = s3_settings(endpoint=s3_endpoint, bucket=f"blobs-{os.urandom(4).hex()}")
    s3 = S3Blobs(settings, db)
    await (await s3.client()).create_bucket(Bucket=settings.s3_bucket)
    await s3.start()
    yield s3
    await s3.stop()


async def test_the_same_bytes_are_one_blob_named_by_their_hash(store: BlobStore) -> None:
    data = os.urandom(3 * 1024 * 1024)  # an attachment-sized blob
    ref = await store.put(data, "application/pdf", ORGS)
    assert (ref.sha256, ref.size, ref.content_type) == (
        hashlib.sha256(data).hexdigest(),
        len(data),
        "application/pdf",
    )
    again = await store.put(data, "application/octet-stream", ORGS)
    assert again == ref.model_copy(update={"content_type": "application/octet-stream"})
    assert await store.get(ref.sha256) == data


async def test_a_missing_blob_is_refused(store: BlobStore) -> None:
    with pytest.raises(BlobMissing):
        await store.get(hashlib.sha256(os.urandom(8)).hexdigest())


async def test_postgres_keeps_one_row_per_blob_and_refuses_altered_bytes(db: asyncpg.Pool) -> None:
    blobs = PostgresBlobs(db)
    data = os.urandom(1000)
    ref = await blobs.put(data, "text/plain", ORGS)
    await blobs.put(data, "text/plain", ORGS)
    assert await db.fetchval("SELECT count(*) FROM blobs WHERE sha256 = $1", bytes.fromhex(ref.sha256)) == 1
    await db.execute("UPDATE blobs SET data = 'tampered' WHERE sha256 = $1", bytes.fromhex(ref.sha256))
    with pytest.raises(BlobCorrupt):
        await blobs.get(ref.sha256)


async def test_s3_objects_are_named_by_hash_and_altered_bytes_refused(
    s3_endpoint: str, db: asyncpg.Pool
) -> None:
    settings = s3_settings(s3_endpoint, f"blobs-{os.urandom(4).hex()}")
    s3 = blob_store(settings, db)
    assert isinstance(s3, S3Blobs)
    client = await s3.client()
    await client.create_bucket(Bucket=settings.s3_bucket)
    ref = await s3.put(b"original bytes", "text/plain", ORGS)
    listed = await client.list_objects_v2(Bucket=settings.s3_bucket)
    assert [o["Key"] for o in listed["Contents"]] == [f"blobs/{ref.sha256}"]
    await client.put_object(Bucket=settings.s3_bucket, Key=f"blobs/{ref.sha256}", Body=b"tampered")
    with pytest.raises(BlobCorrupt):
        await s3.get(ref.sha256)
    await s3.stop()


async def test_s3_start_fails_plainly_when_the_bucket_is_missing(s3_endpoint: str) -> None:
    s3 = S3Blobs(s3_settings(s3_endpoint, "no-such-bucket"), None)
    with pytest.raises(Exception, match=r"404|Not Found|NoSuchBucket"):
        await s3.start()
    await s3.stop()


async def test_puts_arriving_together_are_each_kept_once(store: BlobStore) -> None:
    """Concurrent puts (dispatch keeping many raw messages at once; the PostgreSQL backend writes them
    in one statement), the same bytes among them, all come back."""
    blobs = [os.urandom(2000) for _ in range(20)]
    refs = await asyncio.gather(*(store.put(b, "message/rfc822", ORGS) for b in [*blobs, *blobs[:5]]))
    assert [r.sha256 for r in refs] == [hashlib.sha256(b).hexdigest() for b in [*blobs, *blobs[:5]]]
    assert [await store.get(r.sha256) for r in refs[:20]] == blobs


async def test_delete_takes_only_the_blobs_not_put_again_since(store: BlobStore) -> None:
    """A deleted tenant's blobs go, except those someone put again after the cut (the same bytes are
    shared, and a fresh reference may not be archived yet); missing ones are skipped."""
    old, again, fresh = (os.urandom(500) for _ in range(3))
    old_ref, again_ref = await store.put(old, "text/plain", ORGS), await store.put(again, "text/plain", ORGS)
    if isinstance(store, PostgresBlobs):  # put an hour ago
        await store.pool.execute("UPDATE blobs SET put_at = put_at - interval '1 hour' WHERE sha256 = ANY($1)",
                                 [bytes.fromhex(r.sha256) for r in (old_ref, again_ref)])  # fmt: skip
        cut = await store.pool.fetchval("SELECT now() - interval '30 minutes'")
    else:  # S3 keeps LastModified to the second
        await asyncio.sleep(1.1)
        cut = datetime.now(UTC)
        await asyncio.sleep(1.1)
    fresh_ref = await store.put(fresh, "text/plain", ORGS)
    await store.put(again, "text/plain", ORGS)
    missing = hashlib.sha256(b"never stored").hexdigest()
    wanted = [old_ref.sha256, again_ref.sha256, fresh_ref.sha256, missing]
    assert await store.delete(wanted, put_before=cut) == [old_ref.sha256]
    with pytest.raises(BlobMissing):
        await store.get(old_ref.sha256)
    assert [await store.get(r.sha256) for r in (again_ref, fresh_ref)] == [again, fresh]


async def test_each_put_names_the_organizations_that_refer_to_the_blob(
    store: BlobStore, db: asyncpg.Pool
) -> None:
    """What a tenant delete reads to keep a blob another organization put too, even one whose event has
    not reached the views or the archive yet."""
    one, two, three = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    data = os.urandom(700)
    ref = await store.put(data, "text/plain", [one])
    await asyncio.gather(store.put(data, "text/plain", [two, three]), store.put(data, "text/plain", [one]))
    rows = await db.fetch("SELECT org_id FROM blob_refs WHERE sha256 = $1", bytes.fromhex(ref.sha256))
    assert sorted(r["org_id"] for r in rows) == sorted([one, two, three])
