"""Staff accounts, roles, password login with lockout, rotating refresh tokens."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.kernel import clock
from models.kernel.errors import Conflict, Locked, NotFound, Unauthorized, Unprocessable
from models.tenancy.merchants import get_store
from models.tenancy.visibility import Scope

ROLES = ("owner", "hq_admin", "store_manager", "cashier", "marketer")
HQ_ROLES = frozenset({"owner", "hq_admin", "marketer"})
STORE_ROLES = frozenset({"store_manager", "cashier"})

_hasher = PasswordHasher()  # argon2id with library defaults
_DUMMY_HASH = _hasher.hash("timing-equaliser")


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
    failed_logins = fields.IntField(default=0)
    locked_until = fields.DatetimeField(null=True)
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


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


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
            password_hash=hash_password(password),
            role=role,
            display_name=display_name,
        )
    except IntegrityError as exc:
        raise Conflict(f"username {username!r} is taken", code="staff.username_taken") from exc


async def authenticate(*, username: str, password: str, max_failures: int, lock_seconds: int) -> Staff:
    """Check a password; max_failures wrong answers in a row lock the account for lock_seconds."""
    now = clock.now()
    staff = await Staff.get_or_none(username=username)
    if staff is None or not staff.is_active:
        _hasher_verify(_DUMMY_HASH, password)
        raise Unauthorized("wrong username or password", code="auth.invalid_credentials")
    if staff.locked_until is not None and staff.locked_until > now:
        raise Locked(
            "too many failed logins; try again later",
            code="auth.locked",
            retry_after=int((staff.locked_until - now).total_seconds()) + 1,
        )
    if not _hasher_verify(staff.password_hash, password):
        async with in_transaction():
            await Staff.filter(id=staff.id).update(failed_logins=F("failed_logins") + 1)
            # select_for_update works on the single-result queryset at runtime; Tortoise's stubs lack it
            failures = (await Staff.get(id=staff.id).select_for_update()).failed_logins  # type: ignore[attr-defined]
            if failures >= max_failures:
                await Staff.filter(id=staff.id).update(
                    failed_logins=0, locked_until=now + timedelta(seconds=lock_seconds)
                )
        raise Unauthorized("wrong username or password", code="auth.invalid_credentials")
    if staff.failed_logins or staff.locked_until:
        await Staff.filter(id=staff.id).update(failed_logins=0, locked_until=None)
    if _hasher.check_needs_rehash(staff.password_hash):
        await Staff.filter(id=staff.id).update(password_hash=hash_password(password))
    return staff


def _hasher_verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


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
