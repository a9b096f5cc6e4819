-- Lets one statement undo itself: a data-modifying statement whose guard fails calls this, and the
-- whole statement (every CTE in it) is rolled back. SQLSTATE SS001 tells the caller which case it is.
CREATE FUNCTION sendstream_abort(reason text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'SS001', MESSAGE = reason;
END
$$;
