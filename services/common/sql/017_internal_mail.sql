-- Mail between hosted addresses is delivered without a relay (issue 12): the sender's copy names the
-- identity it reached, the receiver's copy the identity it came from (the inboxes dialect's
-- toInboxId and fromInboxId).
ALTER TABLE messages ADD COLUMN to_identity_id uuid;
ALTER TABLE messages ADD COLUMN from_identity_id uuid;
