-- Which organizations refer to each blob (services/common/blobs.py): written by every put, before the
-- bytes, so deleting a tenant (services/tenants.py) keeps a blob another organization put, even one
-- whose event is still on its way to the views and the archive. The same bytes are one blob, so one
-- blob may have several. Filled here from what the archive and the views refer to already.
CREATE TABLE blob_refs (
    sha256 bytea NOT NULL,
    org_id uuid  NOT NULL,
    PRIMARY KEY (sha256, org_id)
);
CREATE INDEX blob_refs_org ON blob_refs (org_id);

INSERT INTO blob_refs (sha256, org_id)
SELECT DISTINCT decode(s, 'hex'), org_id FROM (
    SELECT org_id, jsonb_path_query(event, '$.**.sha256') #>> '{}' FROM event_archive
     WHERE event @? '$.**.sha256'
    UNION ALL SELECT org_id, raw_sha256 FROM messages WHERE raw_sha256 IS NOT NULL
    UNION ALL SELECT org_id, jsonb_path_query(attachments, '$[*].sha256') #>> '{}' FROM messages
     WHERE attachments <> '[]'
) AS refs (org_id, s)
WHERE s ~ '^[0-9a-f]{64}$'
ON CONFLICT DO NOTHING;
