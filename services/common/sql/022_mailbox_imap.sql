-- IMAP sync of pool mailboxes (issue 14): where a mailbox's replies land at its provider, read back
-- by the sync service; the password sealed like the relay's and never returned; the sync's state as
-- the API shows it.
ALTER TABLE mailboxes
    ADD COLUMN imap_host text,
    ADD COLUMN imap_port integer,
    ADD COLUMN imap_tls text CHECK (imap_tls IN ('none', 'starttls', 'tls')),
    ADD COLUMN imap_username text,
    ADD COLUMN imap_password text,
    ADD COLUMN sync_state text NOT NULL DEFAULT 'idle' CHECK (sync_state IN ('idle', 'syncing', 'error')),
    ADD COLUMN sync_error text,
    ADD COLUMN synced_at timestamptz;
