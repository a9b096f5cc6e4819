-- An identity's display name: the inboxes dialect's inbox `name` (an inbox is an identity, SPEC 2).
ALTER TABLE identities ADD COLUMN name text;
