"""Scheduled refund jobs (being built)."""

from __future__ import annotations
