-- Archive retention (projections/archive.py `drop_expired`): whole month partitions are dropped once
-- older than SENDSTREAM_ARCHIVE_RETENTION_DAYS. Each organization's chain then starts after the last
-- event dropped: its number and hash are kept here, so what remains is still checked link by link.
ALTER TABLE archive_heads ADD COLUMN dropped_seq  bigint NOT NULL DEFAULT 0;
ALTER TABLE archive_heads ADD COLUMN dropped_hash bytea  NOT NULL DEFAULT decode(repeat('00', 32), 'hex');
