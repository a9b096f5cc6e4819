-- The AgentMail dialect's `client_id` (issue 27): creating an inbox twice with one client_id makes one.
ALTER TABLE identities ADD COLUMN client_id text;
CREATE UNIQUE INDEX identities_client_id ON identities (org_id, client_id)
    WHERE client_id IS NOT NULL AND deleted_at IS NULL;
