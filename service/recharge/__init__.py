"""Auto-recharge and pre-load: charge the card on file exactly once per intended recharge.

engine.py (pure decisions: whether and how much), transitions.py (pure: what an answer does to an
attempt); the SQL, one short transaction per call and never a provider call inside
one: planning.py (should a company be charged now), attempts.py (the attempt, its idempotency key,
claims and leases), outcomes.py (a provider answer applied, the wallet credited once),
webhook_events.py (each Stripe event recorded once), wallet_events.py (events emitted); loop.py (the
background loop), webhooks.py (Stripe's events), worker.py (the loop alone, for
`consofta-billing worker`). See README, "Auto-recharge".
"""
