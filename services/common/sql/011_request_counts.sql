-- Requests per organization and purpose, by minute: a rolling hour's rate limit (the inboxes dialect's
-- 100 sends an hour) that every ingress process shares. Rows older than the window are swept hourly.
CREATE TABLE request_counts (
    org_id uuid NOT NULL,
    bucket text NOT NULL,
    minute timestamptz NOT NULL,
    count  integer NOT NULL,
    PRIMARY KEY (org_id, bucket, minute)
);
