-- Received mail's own words: its text without quoted history and signature (issue 12).
ALTER TABLE messages ADD COLUMN reply_text text;
