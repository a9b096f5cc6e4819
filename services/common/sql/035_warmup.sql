-- Warm-up ramps (SPEC 3.5): a mailbox's effective daily limit grows from start_per_day by
-- increase_per_day each whole day since warmup_started_at (schemas/warmup.py). All three, or none.
ALTER TABLE mailboxes
    ADD COLUMN warmup_start_per_day int CHECK (warmup_start_per_day >= 0),
    ADD COLUMN warmup_increase_per_day int CHECK (warmup_increase_per_day >= 0),
    ADD COLUMN warmup_started_at timestamptz,
    ADD CONSTRAINT mailboxes_warmup_whole CHECK (
        (warmup_start_per_day IS NULL) = (warmup_started_at IS NULL)
        AND (warmup_increase_per_day IS NULL) = (warmup_started_at IS NULL)
    );
