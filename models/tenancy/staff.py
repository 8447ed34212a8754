"""Staff accounts, roles, password login with lockout, rotating refresh tokens."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from tortoise import fields
from tortoise.exceptions import IntegrityError, OperationalError
from tortoise.expressions import F, Q
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.kernel import clock
from models.kernel.errors import Conflict, Locked, NotFound, Unauthorized, Unprocessable
from models.tenancy import passwords
from models.tenancy.merchants import get_store
from models.tenancy.visibility import Scope

ROLES = ("owner", "hq_admin", "store_manager", "cashier", "marketer")
HQ_ROLES = frozenset({"owner", "hq_admin", "marketer"})
STORE_ROLES = frozenset({"store_manager", "cashier"})

ATTEMPT_ROW_IDLE = timedelta(days=1)  # an unlocked login_attempt row untouched this long is purged


class Staff(Model):
    id = fields.IntField(primary_key=True)
    merchant: fields.ForeignKeyRelation = fields.ForeignKeyField("models.Merchant", related_name="staff")
    merchant_id: int  # created by Tortoise for the FK
    store: fields.ForeignKeyNullableRelation = fields.ForeignKeyField("models.Store", related_name="staff", null=True)
    store_id: int | None  # created by Tortoise for the FK
    username = fields.CharField(max_length=64, unique=True)
    display_name = fields.CharField(max_length=64, default="")
    password_hash = fields.CharField(max_length=255)
    role = fields.CharField(max_length=16)
    is_active = fields.BooleanField(default=True)
    failed_logins = fields.IntField(default=0)  # unused since login_attempt counts by username
    locked_until = fields.DatetimeField(null=True)  # unused since login_attempt counts by username
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "staff"


class RefreshToken(Model):
    """A refresh token (stored hashed), chained with the tokens it was rotated from by family."""

    id = fields.IntField(primary_key=True)
    staff: fields.ForeignKeyRelation[Staff] = fields.ForeignKeyField("models.Staff", related_name="refresh_tokens")
    token_hash = fields.CharField(max_length=64, unique=True)
    family = fields.CharField(max_length=32, db_index=True)
    expires_at = fields.DatetimeField()
    revoked_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "refresh_token"


class LoginAttempt(Model):
    """Password checks per username (known or not) since the last success or lock: the source of truth of the lockout.

    A check is counted by a guarded UPDATE before the password is checked, so concurrent logins cannot get more
    than login_max_failures checks between locks. Keyed by the username as typed so that an unknown username
    is counted and locked exactly like a real one.
    """

    id = fields.IntField(primary_key=True)
    username = fields.CharField(max_length=64, unique=True)
    attempts = fields.IntField(default=0)
    locked_until = fields.DatetimeField(null=True)
    updated_at = fields.DatetimeField()

    class Meta:
        table = "login_attempt"


class RevokedToken(Model):
    """An access token revoked before it expires (logout), kept here to survive Redis (which only caches it)."""

    id = fields.IntField(primary_key=True)
    jti = fields.CharField(max_length=32, unique=True)
    kind = fields.CharField(max_length=8)  # "staff" | "member"
    subject_id = fields.IntField()
    expires_at = fields.DatetimeField(db_index=True)
    created_at = fields.DatetimeField(auto_now_add=True, db_index=True)  # the poll behind pub/sub

    class Meta:
        table = "revoked_token"


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def hash_password(password: str) -> str:
    return await passwords.hash_password(password)


def validate_role(*, role: str, store_id: int | None) -> None:
    if role not in ROLES:
        raise Unprocessable(
            f"unknown role {role!r}; one of {', '.join(ROLES)}", code="staff.role_invalid", field="role"
        )
    if role in STORE_ROLES and store_id is None:
        raise Unprocessable(f"role {role} needs a store", code="staff.store_required", field="store_id")


async def create_staff(
    *, merchant_id: int, username: str, password: str, role: str, store_id: int | None = None, display_name: str = ""
) -> Staff:
    """Create a staff login; store roles must name a store of the same merchant."""
    validate_role(role=role, store_id=store_id)
    if len(password) < 8:
        raise Unprocessable("password must have at least 8 characters", code="staff.password_weak", field="password")
    if store_id is not None:
        await get_store(merchant_id=merchant_id, store_id=store_id)
    try:
        return await Staff.create(
            merchant_id=merchant_id,
            store_id=store_id if role in STORE_ROLES else None,
            username=username,
            password_hash=await hash_password(password),
            role=role,
            display_name=display_name,
        )
    except IntegrityError as exc:
        raise Conflict(f"username {username!r} is taken", code="staff.username_taken") from exc


async def authenticate(*, username: str, password: str, max_failures: int, lock_seconds: int) -> Staff:
    """Check a password; max_failures wrong answers in a row lock the username for lock_seconds.

    The check is counted before it is made (at most max_failures checks per lock window, however many
    logins run at once) and an unknown username takes the same steps and answers as a known one.
    """
    await _claim_attempt(username, max_failures=max_failures, lock_seconds=lock_seconds)
    staff = await Staff.get_or_none(username=username)
    usable = staff is not None and staff.is_active
    matched = await passwords.verify_password(staff.password_hash if staff is not None and usable else None, password)
    if staff is None or not usable or not matched:
        await LoginAttempt.filter(username=username, locked_until=None, attempts__gte=max_failures).update(
            locked_until=clock.now() + timedelta(seconds=lock_seconds), updated_at=clock.now()
        )
        raise Unauthorized("wrong username or password", code="auth.invalid_credentials")
    now = clock.now()
    # a success resets the count, unless concurrent failures locked the login meanwhile: no success after a lock
    if not await LoginAttempt.filter(username=username, locked_until=None).update(attempts=0, updated_at=now):
        raise await _locked(username, lock_seconds=lock_seconds)
    if passwords.needs_rehash(staff.password_hash):
        await Staff.filter(id=staff.id).update(password_hash=await hash_password(password))
    return staff


async def _claim_attempt(username: str, *, max_failures: int, lock_seconds: int) -> None:
    """Count one password check for username, or raise Locked; each step is one atomic guarded UPDATE."""
    for _ in range(3):
        now = clock.now()
        # a lock that has run out, or a full count whose checks never reported (a crashed process): start over
        restart = Q(locked_until__lte=now) | Q(
            locked_until=None, attempts__gte=max_failures, updated_at__lte=now - timedelta(seconds=lock_seconds)
        )
        if await LoginAttempt.filter(restart, username=username).update(attempts=1, locked_until=None, updated_at=now):
            return
        counted = await LoginAttempt.filter(username=username, locked_until=None, attempts__lt=max_failures).update(
            attempts=F("attempts") + 1, updated_at=now
        )
        if counted:
            return
        if await LoginAttempt.exists(username=username):
            raise await _locked(username, lock_seconds=lock_seconds)
        try:
            await LoginAttempt.create(username=username, attempts=1, updated_at=now)
            return
        except (IntegrityError, OperationalError):  # a concurrent first login created it: count on that row
            continue
    raise await _locked(username, lock_seconds=lock_seconds)


async def _locked(username: str, *, lock_seconds: int) -> Locked:
    row = await LoginAttempt.get_or_none(username=username)
    now = clock.now()
    if row is not None and row.locked_until is not None and row.locked_until > now:
        retry_after = int((row.locked_until - now).total_seconds()) + 1
    else:  # the last checks are still running: the lock they set will last lock_seconds
        retry_after = lock_seconds
    return Locked("too many failed logins; try again later", code="auth.locked", retry_after=retry_after)


async def revoke_access(*, jti: str, kind: str, subject_id: int, expires_at: int) -> None:
    """Record a revoked access token until it would expire (idempotent)."""
    try:
        await RevokedToken.create(
            jti=jti, kind=kind, subject_id=subject_id, expires_at=datetime.fromtimestamp(expires_at, tz=UTC)
        )
    except IntegrityError:
        pass  # revoked already


async def is_access_revoked(jti: str) -> bool:
    return await RevokedToken.exists(jti=jti)


async def unexpired_revocations() -> list[tuple[str, int]]:
    """(jti, expiry as epoch seconds) of every revoked token that has not expired: each process loads them at start."""
    rows = await RevokedToken.filter(expires_at__gt=clock.now()).values_list("jti", "expires_at")
    return [(str(jti), int(expires_at.timestamp())) for jti, expires_at in rows]


async def revocations_since(since: float) -> list[tuple[str, int]]:
    """(jti, expiry) of revocations recorded since an instant (epoch seconds): the poll behind the pub/sub feed."""
    rows = await RevokedToken.filter(created_at__gte=datetime.fromtimestamp(since, tz=UTC)).values_list(
        "jti", "expires_at"
    )
    return [(str(jti), int(expires_at.timestamp())) for jti, expires_at in rows]


async def purge_auth_rows() -> tuple[int, int]:
    """Delete revocations of tokens that have expired anyway and idle unlocked login counts: (tokens, logins)."""
    now = clock.now()
    tokens = await RevokedToken.filter(expires_at__lte=now).delete()
    logins = await LoginAttempt.filter(
        Q(locked_until=None) | Q(locked_until__lte=now), updated_at__lte=now - ATTEMPT_ROW_IDLE
    ).delete()
    return tokens, logins


async def issue_refresh_token(*, staff: Staff, ttl_seconds: int, family: str | None = None) -> str:
    """Create a new refresh token (returned once, stored hashed)."""
    token = secrets.token_urlsafe(32)
    await RefreshToken.create(
        staff=staff,
        token_hash=_token_hash(token),
        family=family or secrets.token_hex(16),
        expires_at=clock.now() + timedelta(seconds=ttl_seconds),
    )
    return token


async def rotate_refresh_token(*, token: str, ttl_seconds: int) -> tuple[Staff, str]:
    """Spend a refresh token for a new one; reuse of a spent token revokes its whole family."""
    now = clock.now()
    reused = False
    async with in_transaction():
        # select_for_update works on the single-result queryset at runtime; Tortoise's stubs lack it
        record = await RefreshToken.get_or_none(token_hash=_token_hash(token)).select_for_update()  # type: ignore[attr-defined]
        if record is None or record.expires_at <= now:
            raise Unauthorized("refresh token is invalid or expired", code="auth.refresh_invalid")
        if record.revoked_at is not None:
            await RefreshToken.filter(family=record.family, revoked_at=None).update(revoked_at=now)
            reused = True
        else:
            spent = await RefreshToken.filter(id=record.id, revoked_at=None).update(revoked_at=now)
            if spent != 1:
                raise Unauthorized("refresh token was already used; please log in again", code="auth.refresh_reused")
            staff = await Staff.get(id=record.staff_id)
            if not staff.is_active:
                raise Unauthorized("account disabled", code="auth.disabled")
            new_token = await issue_refresh_token(staff=staff, ttl_seconds=ttl_seconds, family=record.family)
    if reused:  # raised after the commit: raising inside the block would roll the family revocation back
        raise Unauthorized("refresh token was already used; please log in again", code="auth.refresh_reused")
    return staff, new_token


async def revoke_refresh_family(*, staff_id: int, token: str | None) -> int:
    """Logout: revoke the token's family (or every token of the staff when none is given)."""
    now = clock.now()
    if token:
        record = await RefreshToken.get_or_none(token_hash=_token_hash(token), staff_id=staff_id)
        if record is None:
            return 0
        return await RefreshToken.filter(family=record.family, revoked_at=None).update(revoked_at=now)
    return await RefreshToken.filter(staff_id=staff_id, revoked_at=None).update(revoked_at=now)


async def list_staff(*, scope: Scope) -> list[Staff]:
    """Staff of a merchant, or of one store for a store-scoped caller."""
    return await Staff.filter(**scope.store_rows()).order_by("id")


async def get_staff(*, staff_id: int) -> Staff:
    staff = await Staff.get_or_none(id=staff_id)
    if staff is None:
        raise NotFound("staff not found", code="staff.not_found")
    return staff
