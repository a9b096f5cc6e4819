-- What each message we send went to, and from which mailbox: written by decide's publisher before it
-- publishes the decision, so before the message can go out and before the views have it (a report
-- may come back sooner than the projections). A delivery or feedback report counts only for a
-- recipient listed here, and only when it comes back to the address the message was sent from
-- (services/common/receiving/intake.py). Old rows are swept: by then the views hold the same facts.
CREATE TABLE sent_recipients (
    message_id      uuid PRIMARY KEY,
    org_id          uuid NOT NULL,
    identity_id     uuid NOT NULL,
    mailbox_id      uuid NOT NULL,
    mailbox_email   text NOT NULL,                 -- lower-cased: the envelope sender reports go back to
    rfc_message_id  text NOT NULL,
    recipients      text[] NOT NULL,               -- lower-cased: To, Cc and Bcc, in that order
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sent_recipients_age ON sent_recipients (created_at);

-- Reports that name a message of ours but are not borne out by what we sent (a recipient it was not
-- sent to, or a report that did not come back to the mailbox it was sent from): recorded here and in
-- the log, and nothing else is done with them (no bounce, no suppression, no health change).
CREATE TABLE unmatched_reports (
    id           bigserial PRIMARY KEY,
    org_id       uuid NOT NULL,
    message_id   uuid NOT NULL,                    -- the message of ours the report names
    kind         text NOT NULL CHECK (kind IN ('delivery-status', 'feedback-report')),
    outcome      text NOT NULL,                    -- what it claims: failed, delayed, delivered, complained
    recipient    text NOT NULL,                    -- the address it names
    reason       text NOT NULL,                    -- why it does not count
    sender       text NOT NULL,                    -- the report's envelope sender ('' for the null sender)
    arrived_at   text[] NOT NULL,                  -- the addresses it was delivered to
    raw_sha256   text NOT NULL,                    -- the report as received, in the blob store
    received_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (raw_sha256, message_id, recipient)
);
CREATE INDEX unmatched_reports_org ON unmatched_reports (org_id, received_at DESC);
