-- When a blob was last put (every put sets it): deleting a tenant's data removes only the blobs no one
-- else refers to, and keeps any put again since it began, whose reference may not be archived yet.
ALTER TABLE blobs ADD COLUMN put_at timestamptz NOT NULL DEFAULT now();
