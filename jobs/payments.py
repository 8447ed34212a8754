"""Scheduled payments jobs (being built)."""

from __future__ import annotations
