-- A message's status is one of schemas/status.py's MessageStatus (tests/unit/test_status.py checks the
-- two agree).
ALTER TABLE messages ADD CONSTRAINT messages_status_known CHECK (
    status IN ('queued', 'received', 'sent', 'delivered', 'failed', 'rejected', 'bounced', 'complained')
) NOT VALID;
ALTER TABLE messages VALIDATE CONSTRAINT messages_status_known;
