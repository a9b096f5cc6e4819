-- Idempotency-Key: one row per (organization, key), kept 24 hours.
CREATE TABLE idempotency_keys (
    org_id          uuid NOT NULL,
    key             text NOT NULL,
    fingerprint     bytea NOT NULL,              -- sha256 of method, path and canonical JSON body
    seed            uuid NOT NULL,               -- every id the request creates derives from it
    state           text NOT NULL CHECK (state IN ('in_progress', 'completed')),
    locked_until    timestamptz NOT NULL,        -- an in-progress request past this may be taken over
    response_status integer,
    response_body   bytea,
    response_type   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (org_id, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
