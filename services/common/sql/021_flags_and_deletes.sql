-- The mailboxes dialect (issue 13): a message's read and starred flags and its deletion, set by
-- MessageFlagsChanged and MessageDeleted (each flag only by an event later than the one that last set
-- it, so a batch may apply them in any order); its Reply-To; and the keyset its cursor pages walk.
ALTER TABLE messages ADD COLUMN is_read boolean NOT NULL DEFAULT false;
ALTER TABLE messages ADD COLUMN read_changed_at timestamptz;
ALTER TABLE messages ADD COLUMN is_starred boolean NOT NULL DEFAULT false;
ALTER TABLE messages ADD COLUMN starred_changed_at timestamptz;
ALTER TABLE messages ADD COLUMN deleted_at timestamptz;
ALTER TABLE messages ADD COLUMN reply_to text;
CREATE INDEX messages_identity_page ON messages (identity_id, created_at DESC, id DESC);
DROP INDEX messages_identity;
