-- The IMAP sync service (issue 14): where each folder of a mailbox has been read up to, the worker
-- holding its session, and refusals by sender rules of mail read back over IMAP.
CREATE TABLE mailsync_checkpoints (
    mailbox_id  uuid NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    folder      text NOT NULL,
    account     text NOT NULL,        -- username@host: another account's UIDs mean nothing here
    uidvalidity bigint NOT NULL,
    last_uid    bigint NOT NULL,      -- every message up to it is stored and on the log
    started_at  timestamptz NOT NULL, -- mail from then on is read (a rebuilt folder is read again from it)
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (mailbox_id, folder)
);
ALTER TABLE mailboxes ADD COLUMN sync_worker text;
ALTER TABLE refused_mail DROP CONSTRAINT refused_mail_stage_check;
ALTER TABLE refused_mail ADD CONSTRAINT refused_mail_stage_check CHECK (stage IN ('rcpt', 'data', 'imap'));
