-- Received mail: SPF, DKIM and DMARC as the inbound server judged them (issue 12).
ALTER TABLE messages ADD COLUMN authentication jsonb;
