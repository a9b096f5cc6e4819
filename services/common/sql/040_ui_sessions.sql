-- The dashboard's sessions (services/ingress/ui/sessions.py). The browser's cookie holds a random token;
-- only its sha256 is kept here. A session acts with the API key it was opened with (sealed under
-- SENDSTREAM_SECRET_KEYS), so it sees exactly what that key may see, and ends with the key's revocation,
-- at logout, or at `expires_at`. `csrf_seed` is the session's secret of its forms' CSRF tokens.
CREATE TABLE ui_sessions (
    token_hash  bytea PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES organizations (id),
    key_id      uuid NOT NULL REFERENCES api_keys (id),
    sealed_key  text NOT NULL,
    csrf_seed   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX ui_sessions_expiry ON ui_sessions (expires_at);
