-- A message's webhook deliveries (GET /v1/webhooks/{id}/deliveries?messageId=, the dashboard's message
-- page), newest first, without reading the endpoint's whole history.
CREATE INDEX webhook_deliveries_message ON webhook_deliveries (endpoint_id, message_id, seq DESC)
    WHERE message_id IS NOT NULL;
