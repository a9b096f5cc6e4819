"""What the webhooks service and the ingress share: the delivery queue, signing, and the SSRF guard."""
