"""Auto-recharge and pre-load: charge the card on file exactly once per intended recharge.

engine.py (pure decisions), store.py (SQL), loop.py (the background loop), webhooks.py (Stripe's
events), worker.py (the loop alone, for `consofta-billing worker`). See README, "Auto-recharge".
"""
