-- Receiving mail (issue 12). Threading an arrival looks its references up among the organization's
-- Message-IDs; an identity remembers the dialect it was created through, so the webhooks of mail it
-- receives show the message as that dialect does; received mail may be an auto-reply.
CREATE INDEX messages_rfc_message_id ON messages (org_id, rfc_message_id);
ALTER TABLE identities ADD COLUMN dialect text NOT NULL DEFAULT 'identities';
ALTER TABLE messages ADD COLUMN auto_reply boolean NOT NULL DEFAULT false;
CREATE INDEX threads_refs ON threads USING gin (refs);
CREATE INDEX mailboxes_email ON mailboxes (lower(email)) WHERE deleted_at IS NULL;
