-- Webhook endpoints made through a dialect with webhooks of its own (the AgentMail dialect's /v0/webhooks):
-- `dialect` names it (its bodies and signature headers, schemas/dialect.py: WebhookFormat; NULL: the
-- bodies and Standard Webhooks headers of /v1/webhooks); `inbox_ids`, when set, the only identities whose
-- events it receives; `client_id`, creating twice with one makes one endpoint.
ALTER TABLE webhook_endpoints
    ADD COLUMN dialect text,
    ADD COLUMN inbox_ids uuid[],
    ADD COLUMN client_id text;
CREATE UNIQUE INDEX webhook_endpoints_client_id ON webhook_endpoints (org_id, client_id) WHERE client_id IS NOT NULL;
