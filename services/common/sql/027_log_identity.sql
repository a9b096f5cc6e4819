-- Which log the re-drives were written against: the Kafka cluster id the scheduler last saw. A broker
-- that keeps its log in memory (the embedded one) starts as a new cluster each time, so a new id means
-- the log is gone and every message in flight is re-driven at once (services/common/redrive.py).
CREATE TABLE log_identity (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    cluster_id text NOT NULL,
    seen_at    timestamptz NOT NULL DEFAULT now()
);
