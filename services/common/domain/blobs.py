"""The blob store: bytes stored once under their sha256 and referenced from events by a BlobRef (hash,
size, type), so events stay small however large an attachment or a raw message is.

`BlobStore` is what writers (the ingress for attachments, dispatch for raw MIME) and readers use;
`blob_store` gives the configured backend (`SENDSTREAM_BLOB_STORE`):
- `PostgresBlobs`, the default: it needs nothing beside the database every service already has and
  works for any number of processes on any number of machines;
- `S3Blobs`, any S3-compatible object store (AWS S3, MinIO, Ceph, R2...), for volumes the database
  should not carry: objects named `<prefix><sha256>`.
Puts are idempotent (the same bytes are the same blob), and every read is checked against its hash.
Blobs are shared by whoever puts the same bytes: each put names the organizations it is for, kept in
PostgreSQL's `blob_refs` before the bytes are (with either backend), so deleting a tenant finds the
blobs another organization refers to too. `delete` takes only those not put again since a given
time, known from each blob's last put (PostgreSQL: `put_at`, set by every put; S3: the object's
LastModified, as every put rewrites it).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Collection
from contextlib import AsyncExitStack
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

import asyncpg

from schemas.events import BlobRef
from services.common.batching import GroupCommit
from services.common.settings import CommonSettings


class BlobMissing(LookupError):
    """No blob with this hash is stored."""


class BlobCorrupt(ValueError):
    """The stored bytes no longer hash to their name."""


class BlobStore(Protocol):
    async def put(self, data: bytes, content_type: str, orgs: Collection[UUID]) -> BlobRef: ...
    async def get(self, sha256: str) -> bytes: ...
    async def delete(self, sha256s: list[str], put_before: datetime) -> list[str]: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


def ref_of(data: bytes, content_type: str) -> BlobRef:
    return BlobRef(sha256=hashlib.sha256(data).hexdigest(), size=len(data), content_type=content_type)


def refs_of(rows: list[tuple[bytes, Collection[UUID]]]) -> tuple[list[bytes], list[UUID]]:
    """(hash, organizations) pairs as two arrays for `blob_refs`, in one order (no two writers wait on
    each other's rows crosswise)."""
    pairs = sorted({(sha, org) for sha, orgs in rows for org in orgs})
    return [sha for sha, _ in pairs], [org for _, org in pairs]


def checked(sha256: str, data: bytes) -> bytes:
    if hashlib.sha256(data).hexdigest() != sha256:
        raise BlobCorrupt(f"blob {sha256} does not match its hash")
    return data


class PostgresBlobs:
    """Blobs as rows of the `blobs` table. Small puts that arrive together (dispatch keeping the raw
    message of every send) share one statement and one commit; large ones are written on their own."""

    GROUPED_MAX = 256 * 1024

    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool
        self.small = GroupCommit(self._write, max_delay=0.002, max_items=100)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def put(self, data: bytes, content_type: str, orgs: Collection[UUID]) -> BlobRef:
        ref = ref_of(data, content_type)
        row = (bytes.fromhex(ref.sha256), ref.size, data, orgs)
        if ref.size <= self.GROUPED_MAX:
            await self.small.submit(row)
        else:
            await self._write([row])
        return ref

    async def _write(self, rows: list[tuple[bytes, int, bytes, Collection[UUID]]]) -> list[None]:
        shas, sizes, datas, orgs = map(list, zip(*rows, strict=True))
        await self.pool.execute(
            """WITH refs AS (INSERT INTO blob_refs (sha256, org_id) SELECT * FROM unnest($4::bytea[], $5::uuid[])
                             ON CONFLICT DO NOTHING)
               INSERT INTO blobs (sha256, size, data)
               SELECT DISTINCT ON (sha256) * FROM unnest($1::bytea[], $2::bigint[], $3::bytea[]) AS r (sha256, size, data)
               ON CONFLICT (sha256) DO UPDATE SET put_at = now()""",
            shas, sizes, datas, *refs_of(list(zip(shas, orgs, strict=True))),
        )  # fmt: skip
        return [None] * len(rows)

    async def get(self, sha256: str) -> bytes:
        data = await self.pool.fetchval("SELECT data FROM blobs WHERE sha256 = $1", bytes.fromhex(sha256))
        if data is None:
            raise BlobMissing(sha256)
        return checked(sha256, data)

    async def delete(self, sha256s: list[str], put_before: datetime) -> list[str]:
        """Delete those of `sha256s` last put before `put_before`; returns the ones deleted."""
        rows = await self.pool.fetch(
            "DELETE FROM blobs WHERE sha256 = ANY($1::bytea[]) AND put_at < $2 RETURNING sha256",
            [bytes.fromhex(s) for s in sha256s],
            put_before,
        )
        return [r["sha256"].hex() for r in rows]


class S3Blobs:
    """Blobs as objects of one bucket, through aiobotocore (the `s3` extra). The bucket must exist.

    The client opens on first use (or at `start`, which also checks the bucket and the keys)."""

    def __init__(self, settings: CommonSettings, pool: asyncpg.Pool):
        self.settings, self.pool = settings, pool
        self._client: Any = None
        self._stack = AsyncExitStack()
        self._opening = asyncio.Lock()

    async def client(self) -> Any:
        async with self._opening:
            if self._client is None:
                # Imported here: only deployments that keep blobs in S3 install the `s3` extra.
                from aiobotocore.session import get_session  # noqa: PLC0415

                s = self.settings
                self._client = await self._stack.enter_async_context(
                    get_session().create_client(
                        "s3", endpoint_url=s.s3_endpoint_url, region_name=s.s3_region,
                        aws_access_key_id=s.s3_access_key_id, aws_secret_access_key=s.s3_secret_access_key,
                    )
                )  # fmt: skip
            return self._client

    def _key(self, sha256: str) -> str:
        return self.settings.s3_prefix + sha256

    async def start(self) -> None:
        await (await self.client()).head_bucket(Bucket=self.settings.s3_bucket)  # fail at start, not mid-send

    async def stop(self) -> None:
        await self._stack.aclose()
        self._client = None

    async def put(self, data: bytes, content_type: str, orgs: Collection[UUID]) -> BlobRef:
        ref = ref_of(data, content_type)
        await self.pool.execute(
            """INSERT INTO blob_refs (sha256, org_id) SELECT * FROM unnest($1::bytea[], $2::uuid[])
               ON CONFLICT DO NOTHING""",
            *refs_of([(bytes.fromhex(ref.sha256), orgs)]),
        )  # before the bytes: a tenant delete that does not see it yet sees the new LastModified
        await (await self.client()).put_object(
            Bucket=self.settings.s3_bucket, Key=self._key(ref.sha256), Body=data
        )
        return ref

    async def get(self, sha256: str) -> bytes:
        s3 = await self.client()
        try:
            answer = await s3.get_object(Bucket=self.settings.s3_bucket, Key=self._key(sha256))
        except s3.exceptions.NoSuchKey:
            raise BlobMissing(sha256) from None
        async with answer["Body"] as stream:
            return checked(sha256, await stream.read())

    async def delete(self, sha256s: list[str], put_before: datetime) -> list[str]:
        """Delete those of `sha256s` last put (written) before `put_before`; returns the ones deleted."""
        s3, deleted = await self.client(), []
        for sha256 in sha256s:
            try:
                head = await s3.head_object(Bucket=self.settings.s3_bucket, Key=self._key(sha256))
            except s3.exceptions.ClientError as e:
                if e.response["Error"]["Code"] in ("404", "NoSuchKey"):
                    continue
                raise
            if head["LastModified"] < put_before:
                await s3.delete_object(Bucket=self.settings.s3_bucket, Key=self._key(sha256))
                deleted.append(sha256)
        return deleted


def blob_store(settings: CommonSettings, pool: asyncpg.Pool) -> BlobStore:
    """The configured blob store (`start` it to check it is reachable; `stop` it when done)."""
    return S3Blobs(settings, pool) if settings.blob_store == "s3" else PostgresBlobs(pool)
