-- Addresses an organization must not mail, projected from the suppressions topic. Adding and removing
-- commute (the projections apply a batch grouped by statement): each row keeps the time of the last
-- change applied, and only a later change moves it. While an address stays suppressed its first cause
-- is kept: the event behind it (cause_id: a bounce, a complaint) and the message it was about.
CREATE TABLE suppressions (
    org_id      uuid NOT NULL,
    address     text NOT NULL,                   -- lower-cased
    active      boolean NOT NULL,                -- false: removed (kept so an older add cannot revive it)
    reason      text NOT NULL CHECK (reason IN ('hard_bounce', 'complaint', 'unsubscribe', 'manual')),
    message_id  uuid,
    event_id    uuid NOT NULL,                   -- the SuppressionAdded (or SuppressionRemoved)
    cause_id    uuid,
    created_at  timestamptz NOT NULL,            -- when it was suppressed
    changed_at  timestamptz NOT NULL,
    PRIMARY KEY (org_id, address)
);
CREATE INDEX suppressions_listing ON suppressions (org_id, created_at DESC, address) WHERE active;
