-- Configuration written by the ingress (not event-derived; admin facts are also published as events).
CREATE TABLE organizations (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    is_operator boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX organizations_operator_name ON organizations (name) WHERE is_operator;

CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES organizations (id),
    key_hash    bytea NOT NULL UNIQUE,          -- sha256 of the key; the key itself is shown once
    key_prefix  text NOT NULL,                  -- first characters, for people to tell keys apart
    scopes      text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE identities (
    id          uuid PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES organizations (id),
    handle      text NOT NULL,
    daily_cap   integer NOT NULL CHECK (daily_cap >= 0),
    timezone    text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE UNIQUE INDEX identities_handle ON identities (lower(handle)) WHERE deleted_at IS NULL;
CREATE INDEX identities_org ON identities (org_id);

CREATE TABLE mailboxes (
    id            uuid PRIMARY KEY,
    org_id        uuid NOT NULL REFERENCES organizations (id),
    identity_id   uuid NOT NULL REFERENCES identities (id),
    email         text NOT NULL,
    smtp_host     text NOT NULL,
    smtp_port     integer NOT NULL,
    smtp_tls      text NOT NULL CHECK (smtp_tls IN ('none', 'starttls', 'tls')),
    smtp_username text,
    smtp_password text,                          -- never returned by any API
    hourly_limit  integer NOT NULL CHECK (hourly_limit >= 0),
    daily_limit   integer CHECK (daily_limit >= 0),
    health        text NOT NULL DEFAULT 'healthy' CHECK (health IN ('healthy', 'unhealthy', 'paused')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz
);
CREATE UNIQUE INDEX mailboxes_identity_email ON mailboxes (identity_id, lower(email)) WHERE deleted_at IS NULL;

-- Every consumer's tracking record: which events it handled and what it published for each.
CREATE TABLE processed_events (
    consumer     text NOT NULL,
    event_id     uuid NOT NULL,
    outputs      jsonb,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX processed_events_age ON processed_events (processed_at);

-- State of the decide service (owned by it; changed only with its processed_events row).
CREATE TABLE affinity (
    identity_id uuid NOT NULL,
    recipient   text NOT NULL,                   -- lower-cased address
    mailbox_id  uuid NOT NULL,
    pinned_at   timestamptz NOT NULL,
    PRIMARY KEY (identity_id, recipient)
);
CREATE TABLE identity_usage (
    identity_id uuid NOT NULL,
    day         date NOT NULL,                   -- in the identity's time zone
    sent        integer NOT NULL,
    PRIMARY KEY (identity_id, day)
);
CREATE TABLE mailbox_sends (                     -- accepted sends, for rolling-hour and daily limits
    mailbox_id  uuid NOT NULL,
    sent_at     timestamptz NOT NULL,
    message_id  uuid NOT NULL,
    PRIMARY KEY (mailbox_id, sent_at, message_id)
);
CREATE TABLE threads (                           -- what a reply needs: binding, counterpart, headers
    conv_id      uuid PRIMARY KEY,
    org_id       uuid NOT NULL,
    identity_id  uuid NOT NULL,
    mailbox_id   uuid NOT NULL,
    counterpart  text NOT NULL,
    subject      text NOT NULL,
    last_rfc_message_id text,
    refs         text[] NOT NULL DEFAULT '{}',
    updated_at   timestamptz NOT NULL
);

-- Projections: disposable views built only from events.
CREATE TABLE conversations (
    id            uuid PRIMARY KEY,
    org_id        uuid NOT NULL,
    identity_id   uuid NOT NULL,
    mailbox_id    uuid,
    counterpart   text,
    subject       text,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE INDEX conversations_identity ON conversations (identity_id, updated_at DESC);

CREATE TABLE messages (
    id              uuid PRIMARY KEY,
    org_id          uuid NOT NULL,
    identity_id     uuid,
    conv_id         uuid,
    direction       text NOT NULL CHECK (direction IN ('outbound', 'inbound')),
    mailbox_id      uuid,
    mailbox_email   text,
    from_addr       text,
    to_addrs        text[] NOT NULL DEFAULT '{}',
    cc_addrs        text[] NOT NULL DEFAULT '{}',
    bcc_addrs       text[] NOT NULL DEFAULT '{}',
    subject         text,
    text_body       text,
    html_body       text,
    rfc_message_id  text,
    in_reply_to     text,
    refs            text[] NOT NULL DEFAULT '{}',
    affinity        text,
    status          text NOT NULL,
    status_rank     integer NOT NULL,             -- statuses only move forward, whatever order events arrive in
    reason          text,
    smtp_code       integer,
    smtp_message    text,
    created_at      timestamptz NOT NULL,
    sent_at         timestamptz,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX messages_conv ON messages (conv_id, created_at, id);
CREATE INDEX messages_identity ON messages (identity_id, created_at DESC);

CREATE TABLE message_events (                     -- the audit trail: every event of a message
    message_id  uuid NOT NULL,
    event_id    uuid NOT NULL,
    org_id      uuid NOT NULL,
    type        text NOT NULL,
    occurred_at timestamptz NOT NULL,             -- listed by (occurred_at, event_id): UUIDv7 is time-ordered
    event       jsonb NOT NULL,
    PRIMARY KEY (message_id, event_id)
);
