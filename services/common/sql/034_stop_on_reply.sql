-- Stop on reply (SPEC 3.5): a scheduled message into a conversation that mail arriving in it first cancels
-- ('reply': not an auto-reply; 'any': anything). Decide looks them up by the arrival's conversation.
ALTER TABLE scheduled_sends ADD COLUMN unless_replied text CHECK (unless_replied IN ('reply', 'any'));
CREATE INDEX scheduled_sends_stop_on_reply ON scheduled_sends (conv_id)
    WHERE state = 'scheduled' AND unless_replied IS NOT NULL;
