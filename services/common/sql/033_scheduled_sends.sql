-- Scheduled sends (SPEC 3.5): decide's state of each scheduled message. Its firing and a cancel are
-- decided on the identity's partition in one order; this row says which came first.
CREATE TABLE scheduled_sends (
    message_id  uuid PRIMARY KEY,
    org_id      uuid NOT NULL,
    identity_id uuid NOT NULL,
    send_at     timestamptz NOT NULL,
    state       text NOT NULL CHECK (state IN ('scheduled', 'cancelled', 'fired')),
    conv_id     uuid,
    to_addrs    text[] NOT NULL DEFAULT '{}',
    subject     text NOT NULL DEFAULT '',  -- what GET /v1/scheduled shows, as decide wrote it (not the view's)
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX scheduled_sends_waiting ON scheduled_sends (identity_id, send_at) WHERE state = 'scheduled';

-- A message's status is one of schemas/status.py's MessageStatus (tests/unit/test_status.py checks the
-- two agree): now with `scheduled` and `cancelled`.
ALTER TABLE messages DROP CONSTRAINT messages_status_known;
ALTER TABLE messages ADD CONSTRAINT messages_status_known CHECK (
    status IN ('scheduled', 'queued', 'received', 'sent', 'delivered', 'failed', 'rejected', 'cancelled', 'bounced',
               'complained')
);

-- Ranks are tens apart from now on (schemas/status.py: STATUS_RANK), so that `scheduled` comes between
-- `queued` and `sent`.
UPDATE messages SET status_rank = status_rank * 10;
