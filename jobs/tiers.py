"""Scheduled tiers jobs (being built)."""

from __future__ import annotations
