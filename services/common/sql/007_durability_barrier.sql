-- A consumer that commits with synchronous_commit off (decide, on the path every send request waits
-- on) makes its work durable before acting on it by committing a write here with the server's usual
-- durability: that commit waits for the WAL to be flushed up to it, so every earlier commit is
-- durable too. One row per consumer, overwritten in place.
CREATE TABLE durability_barriers (
    consumer text PRIMARY KEY,
    at       timestamptz NOT NULL
);
