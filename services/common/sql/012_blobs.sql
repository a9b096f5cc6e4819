-- The blob store's PostgreSQL backend (services/common/blobs.py): content-addressed bytes (attachments,
-- large bodies, raw MIME), stored once however often they are referenced. Events carry only BlobRefs.
CREATE TABLE blobs (
    sha256     bytea PRIMARY KEY,
    size       bigint NOT NULL,
    data       bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
