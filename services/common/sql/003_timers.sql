-- Durable timers: anything that must happen later is an event to publish at a due time.
-- The scheduler publishes due rows (FOR UPDATE SKIP LOCKED, safe across processes) and deletes them.
CREATE TABLE timers (
    event_id  uuid PRIMARY KEY,                  -- the event's own id: scheduling twice is harmless
    due_at    timestamptz NOT NULL,
    event     jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX timers_due ON timers (due_at);
