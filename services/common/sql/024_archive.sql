-- The archive (projections/archive.py): every event of every topic, once, append-only: the record the
-- audit trail, the tenant feed and replay read. Monthly partitions on occurred_at, created by the
-- archiver as it needs them; retention drops whole months (README: "The event log of record").
CREATE TABLE event_archive (
    org_id      uuid        NOT NULL,
    seq         bigint      NOT NULL,  -- the organization's events numbered without gaps: the feed's cursor
    event_id    uuid        NOT NULL,
    type        text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now(),
    topic       text,                  -- where it was read (none for events kept from message_events)
    partition   integer,
    "offset"    bigint,
    message_ids uuid[]      NOT NULL DEFAULT '{}',  -- the messages whose audit trail shows it
    event       jsonb       NOT NULL,
    prev_hash   bytea       NOT NULL,
    hash        bytea       NOT NULL,  -- sha256(prev_hash || '<org_id>:<seq>:' || event::text)
    UNIQUE (event_id, occurred_at)
) PARTITION BY RANGE (occurred_at);

CREATE INDEX event_archive_feed ON event_archive (org_id, seq);
CREATE INDEX event_archive_messages ON event_archive USING gin (message_ids);

-- The end of each organization's chain, locked by the archiver while it appends.
CREATE TABLE archive_heads (
    org_id uuid   PRIMARY KEY,
    seq    bigint NOT NULL DEFAULT 0,
    hash   bytea  NOT NULL DEFAULT decode(repeat('00', 32), 'hex')
);

-- The audit view the archive replaces: its events become each organization's first, in time order,
-- chained as the archiver chains (the archiver then passes over them when it reads them on the log).
DO $$
DECLARE
    month timestamptz;
    r record;
    org uuid := NULL;
    n bigint;
    prev bytea;
    digest bytea;
BEGIN
    FOR month IN SELECT DISTINCT date_trunc('month', occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                   FROM message_events LOOP
        EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF event_archive FOR VALUES FROM (%L) TO (%L)',
                       'event_archive_' || to_char(month AT TIME ZONE 'UTC', 'YYYY_MM'), month,
                       month + interval '1 month');
    END LOOP;
    FOR r IN SELECT org_id, event_id, min(type) AS type, min(occurred_at) AS occurred_at,
                    array_agg(DISTINCT message_id) AS message_ids, (array_agg(event))[1] AS event
               FROM message_events GROUP BY org_id, event_id
              ORDER BY org_id, min(occurred_at), event_id LOOP
        IF org IS DISTINCT FROM r.org_id THEN
            IF org IS NOT NULL THEN
                INSERT INTO archive_heads (org_id, seq, hash) VALUES (org, n, prev);
            END IF;
            org := r.org_id;
            n := 0;
            prev := decode(repeat('00', 32), 'hex');
        END IF;
        n := n + 1;
        digest := sha256(prev || convert_to(r.org_id::text || ':' || n || ':' || r.event::text, 'UTF8'));
        INSERT INTO event_archive (org_id, seq, event_id, type, occurred_at, message_ids, event, prev_hash, hash)
        VALUES (r.org_id, n, r.event_id, r.type, r.occurred_at, r.message_ids, r.event, prev, digest);
        prev := digest;
    END LOOP;
    IF org IS NOT NULL THEN
        INSERT INTO archive_heads (org_id, seq, hash) VALUES (org, n, prev);
    END IF;
END $$;

DROP TABLE message_events;
