"""Merchant-defined member fields and the validation of member values against them."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.models import Model

from models.kernel.errors import Conflict, Unprocessable

FIELD_TYPES = ("string", "int", "date", "enum", "bool")
KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_STRING = 255


class CustomFieldDef(Model):
    id = fields.IntField(primary_key=True)
    merchant: fields.ForeignKeyRelation = fields.ForeignKeyField("models.Merchant", related_name="custom_fields")
    key = fields.CharField(max_length=32)
    label = fields.CharField(max_length=64)
    type = fields.CharField(max_length=8)
    required = fields.BooleanField(default=False)
    options: list[str] = fields.JSONField(default=list)
    position = fields.IntField(default=0)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "custom_field_def"
        unique_together = (("merchant", "key"),)


async def define_field(
    *, merchant_id: int, key: str, label: str, type: str, required: bool = False, options: list[str] | None = None
) -> CustomFieldDef:
    """Add a member field; enum fields need options, keys are snake_case and unique per merchant."""
    if not KEY_PATTERN.match(key):
        raise Unprocessable(
            "key must be snake_case, 1-32 chars, starting with a letter", code="custom_field.key_invalid", field="key"
        )
    if type not in FIELD_TYPES:
        raise Unprocessable(
            f"type must be one of {', '.join(FIELD_TYPES)}", code="custom_field.type_invalid", field="type"
        )
    options = list(options or [])
    if type == "enum" and (not options or len(set(options)) != len(options)):
        raise Unprocessable("enum fields need distinct options", code="custom_field.options_invalid", field="options")
    if type != "enum" and options:
        raise Unprocessable("only enum fields take options", code="custom_field.options_invalid", field="options")
    position = await CustomFieldDef.filter(merchant_id=merchant_id).count()
    try:
        return await CustomFieldDef.create(
            merchant_id=merchant_id,
            key=key,
            label=label,
            type=type,
            required=required,
            options=options,
            position=position,
        )
    except IntegrityError as exc:
        raise Conflict(f"field {key!r} already exists", code="custom_field.key_taken") from exc


async def list_fields(*, merchant_id: int) -> list[CustomFieldDef]:
    return await CustomFieldDef.filter(merchant_id=merchant_id).order_by("position", "id")


def _coerce(definition: CustomFieldDef, value: Any) -> Any:
    field = f"custom_fields.{definition.key}"
    kind = definition.type
    if kind == "string":
        if not isinstance(value, str) or len(value) > MAX_STRING:
            raise Unprocessable(
                f"{definition.key} must be text up to {MAX_STRING} characters",
                code="custom_field.value_invalid",
                field=field,
            )
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise Unprocessable(f"{definition.key} must be an integer", code="custom_field.value_invalid", field=field)
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise Unprocessable(
                f"{definition.key} must be true or false", code="custom_field.value_invalid", field=field
            )
        return value
    if kind == "date":
        try:
            return date.fromisoformat(value).isoformat() if isinstance(value, str) else _raise()
        except ValueError:
            raise Unprocessable(
                f"{definition.key} must be a date YYYY-MM-DD", code="custom_field.value_invalid", field=field
            ) from None
    if value not in definition.options:
        raise Unprocessable(
            f"{definition.key} must be one of {', '.join(definition.options)}",
            code="custom_field.value_invalid",
            field=field,
        )
    return value


def _raise() -> Any:
    raise ValueError


async def validate_values(
    *, merchant_id: int, values: dict[str, Any], current: dict[str, Any] | None = None, enforce_required: bool = True
) -> dict[str, Any]:
    """Check values against the merchant's fields; returns the merged, normalised dict."""
    definitions = {d.key: d for d in await list_fields(merchant_id=merchant_id)}
    unknown = sorted(set(values) - set(definitions))
    if unknown:
        raise Unprocessable(
            f"unknown custom field {unknown[0]!r}", code="custom_field.unknown", field=f"custom_fields.{unknown[0]}"
        )
    merged = dict(current or {})
    for key, value in values.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _coerce(definitions[key], value)
    for key, definition in definitions.items():
        if enforce_required and definition.required and merged.get(key) in (None, ""):
            raise Unprocessable(
                f"{definition.label} ({key}) is required", code="custom_field.required", field=f"custom_fields.{key}"
            )
    return merged
