"""Payments: the provider interface (provider.py) and its Stripe and sandbox implementations.

Import the interface from ``service.payments.provider``; only the code that wires the service
together imports ``stripe_provider`` (which pulls in the ``stripe`` library) or ``sandbox_provider``.
"""
