"""Scheduled auth housekeeping: forget revocations of expired access tokens and idle login counts."""

from __future__ import annotations

from jobs.context import JobContext
from models.tenancy import staff as staff_domain


async def purge(ctx: JobContext) -> str:
    """Delete revoked_token rows past their token's expiry and unlocked login_attempt rows idle for a day."""
    tokens, logins = await staff_domain.purge_auth_rows()
    return f"purged {tokens} expired token revocations, {logins} idle login counts"
