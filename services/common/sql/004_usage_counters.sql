-- Decide's usage counters, replacing one row per send (which made every decision scan the day's sends).
-- Rolling hour: per-minute buckets, summed over the last 60 minutes (a bucket that is partly older
-- still counts whole, so the hourly limit is never exceeded in any 60-minute window).
CREATE TABLE mailbox_minutes (
    mailbox_id uuid NOT NULL,
    minute     timestamptz NOT NULL,
    sent       integer NOT NULL,
    PRIMARY KEY (mailbox_id, minute)
);
-- Daily limit and least-recently-used: one row per mailbox and day (the identity's time zone).
CREATE TABLE mailbox_days (
    mailbox_id   uuid NOT NULL,
    day          date NOT NULL,
    sent         integer NOT NULL,
    last_used_at timestamptz NOT NULL,
    PRIMARY KEY (mailbox_id, day)
);
DROP TABLE mailbox_sends;
