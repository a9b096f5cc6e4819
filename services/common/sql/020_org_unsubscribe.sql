-- An organization may have every send carry one-click unsubscribe unless the request says otherwise.
ALTER TABLE organizations ADD COLUMN unsubscribe_default boolean NOT NULL DEFAULT false;
