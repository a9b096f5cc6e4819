-- What the messages view keeps of a message's files and raw form (issue 11): its attachments (name,
-- type, size and blob hash each; the bytes are in the blob store), the hash of the raw MIME the relay
-- took, and the API dialect it was sent through (its webhooks show it as that dialect does).
ALTER TABLE messages ADD COLUMN attachments jsonb NOT NULL DEFAULT '[]';
ALTER TABLE messages ADD COLUMN raw_sha256 text;
ALTER TABLE messages ADD COLUMN dialect text;
