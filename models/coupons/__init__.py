"""Coupons: templates with exact stock and per-member limits, issue, redemption at the till, expiry."""
