"""eduserve's ingress side: HTTP API, settings, routing to model deployments. Never imports torch."""
