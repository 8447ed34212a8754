"""Consumption analytics: daily roll-ups of purchases and the reports read from them."""
