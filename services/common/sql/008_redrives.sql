-- Every message on its way out, until it reaches an end (sent, failed, rejected): the event that moves it
-- on next, and when that is overdue. The scheduler re-publishes an overdue event under its own event_id
-- (every consumer drops what it has seen), so a record lost between two services, or a broker that lost
-- its whole log (the embedded one keeps it in memory), delays a message but never loses it.
-- Written with the step that makes the event (decide's decision, dispatch's retry or lease, the ingress
-- for a request it answered before it was decided); removed by the projections at the message's end.
CREATE TABLE redrives (
    message_id uuid PRIMARY KEY,
    event      jsonb NOT NULL,
    due_at     timestamptz NOT NULL,
    attempts   integer NOT NULL DEFAULT 0
);
CREATE INDEX redrives_due ON redrives (due_at);
