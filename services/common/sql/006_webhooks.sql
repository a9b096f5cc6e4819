-- Webhook endpoints (configuration written by the ingress) and their deliveries (the webhooks service).
CREATE TABLE webhook_endpoints (
    id              uuid PRIMARY KEY,
    org_id          uuid NOT NULL REFERENCES organizations (id),
    url             text NOT NULL,
    events          text[] NOT NULL,             -- the names subscribed, as the caller wrote them
    description     text NOT NULL DEFAULT '',
    secret          text NOT NULL,               -- whsec_…, encrypted at rest like relay passwords
    previous_secret text,                        -- still signed with until previous_expires_at
    previous_expires_at timestamptz,
    enabled         boolean NOT NULL DEFAULT true,
    disabled_reason text,
    failing_since   timestamptz,                 -- first failure since the last success
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_org ON webhook_endpoints (org_id);

-- One event for one endpoint. The row is the delivery's durable timer: `next_attempt_at` is when it is
-- due (claimed with FOR UPDATE SKIP LOCKED, then leased by pushing it past the request timeout).
CREATE TABLE webhook_deliveries (
    id              uuid PRIMARY KEY,            -- uuid5(endpoint, event): a redelivered event adds nothing
    seq             bigserial NOT NULL,          -- creation order: per-endpoint order of one message's events
    endpoint_id     uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    org_id          uuid NOT NULL,
    event_id        uuid NOT NULL,               -- the event it reports (or the test request)
    event_type      text NOT NULL,               -- the webhook type as sent, e.g. message.sent
    message_id      uuid,
    body            text NOT NULL,               -- exactly the bytes signed and sent on every attempt
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    last_status_code integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_endpoint_due ON webhook_deliveries (endpoint_id, next_attempt_at, seq)
    WHERE state = 'pending';  -- a claim walks each endpoint's due deliveries in order and stops
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (endpoint_id, message_id, seq) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, seq DESC);

CREATE TABLE webhook_attempts (
    delivery_id     uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt         integer NOT NULL,
    started_at      timestamptz NOT NULL,
    duration_ms     integer NOT NULL,
    status_code     integer,
    error           text NOT NULL DEFAULT '',
    response        text NOT NULL DEFAULT '',    -- the first bytes of the endpoint's answer
    PRIMARY KEY (delivery_id, attempt)
);

-- A queue table: every delivery is inserted, updated when claimed and when recorded. Vacuum it early so
-- claims do not wade through dead index entries while a backlog drains.
ALTER TABLE webhook_deliveries SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0,
                                    autovacuum_analyze_scale_factor = 0.05);
