"""Tiers: growth value, where a member stands, the tier policy, staff holds and the monthly settlement."""
