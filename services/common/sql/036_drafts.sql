-- Drafts a person approves (SPEC 3.5). A draft keeps the request event its approval publishes, its ids
-- fixed when it was made: approving it again publishes the same event, which decide takes once.
CREATE TABLE drafts (
    id          uuid PRIMARY KEY,
    org_id      uuid NOT NULL,
    identity_id uuid NOT NULL,
    status      text NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'cancelled')),
    request     jsonb NOT NULL,
    message_ids uuid[] NOT NULL,
    wanted      jsonb NOT NULL,  -- its messages: id, conversation and recipients each (RequestedMessage)
    dialect     text NOT NULL,
    reason      text,
    created_by  uuid,  -- the API keys that made it and that approved, rejected or cancelled it
    decided_by  uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX drafts_listing ON drafts (org_id, created_at, id);
CREATE INDEX drafts_of_message ON drafts USING gin (message_ids);

-- An identity that holds every send of every dialect for approval.
ALTER TABLE identities ADD COLUMN require_approval boolean NOT NULL DEFAULT false;

-- A message's status may be `pending_approval` (schemas/status.py).
ALTER TABLE messages DROP CONSTRAINT messages_status_known;
ALTER TABLE messages ADD CONSTRAINT messages_status_known CHECK (
    status IN ('pending_approval', 'scheduled', 'queued', 'received', 'sent', 'delivered', 'failed', 'rejected',
               'cancelled', 'bounced', 'complained')
);
