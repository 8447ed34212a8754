"""Tortoise models and the domain functions that guard them, one module per domain."""
