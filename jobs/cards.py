"""Outbox topics of the WeChat member card: activation and sync of points, balance and tier."""
