"""Outbound webhooks: wallet events from the outbox, signed and delivered at least once to endpoints.

* `fanout`: reads the outbox (`service.app.events`, the all-companies cursor) and writes one delivery
  row per matching endpoint, exactly once, from one replica at a time.
* `deliverer`: claims due deliveries per endpoint (FOR UPDATE SKIP LOCKED, with a lease), POSTs them,
  and records the outcome with backoff; `store` holds its SQL.
* `signing`, `body`: the `Consofta-Signature` header and the JSON body.
Endpoints are registered through `service.app.webhook_endpoints` (gRPC and the admin CLI).
"""
