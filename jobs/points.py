"""Scheduled points jobs (being built)."""

from __future__ import annotations
