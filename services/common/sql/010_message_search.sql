-- The messages view serves the dialects' reads: labels, and full-text search over subject, body text
-- and sender (the inboxes dialect's `?query=`). 'simple' configuration: no stemming, so a word matches
-- as written and the last word of a query by prefix; the sender's address is split at its punctuation
-- too, so "alice" finds alice@example.test. Subject ranks above sender, sender above text. Only the
-- text's first 100,000 characters are indexed (a tsvector holds at most 1 MB).
ALTER TABLE messages ADD COLUMN labels text[] NOT NULL DEFAULT '{}';
ALTER TABLE messages ADD COLUMN search tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('simple', coalesce(subject, '')), 'A') ||
    setweight(to_tsvector('simple', coalesce(from_addr, '') || ' ' ||
                                    regexp_replace(coalesce(from_addr, ''), '[@._+-]', ' ', 'g')), 'B') ||
    setweight(to_tsvector('simple', left(coalesce(text_body, ''), 100000)), 'C')
) STORED;
CREATE INDEX messages_search ON messages USING gin (search);
