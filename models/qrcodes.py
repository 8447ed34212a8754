"""Parametric QR codes per store/staff (official account and mini-program) and the scans they bring."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class QrCode(Model):
    id = fields.IntField(primary_key=True)
    merchant_id = fields.IntField()
    kind = fields.CharField(max_length=8)  # oa (qrcode/create) | mp (getwxacodeunlimit) | card (card/qrcode)
    scene = fields.CharField(max_length=64)  # store:<code> | staff:<id> | ref:<code>; card QR: outer_str
    store_id = fields.IntField(null=True)
    staff_id = fields.IntField(null=True)
    card_id = fields.CharField(max_length=64, default="")
    ticket = fields.CharField(max_length=255, default="")
    url = fields.CharField(max_length=512, default="")
    image_png = fields.BinaryField(null=True)  # mini-program codes come back as images
    label = fields.CharField(max_length=64, default="")
    is_active = fields.BooleanField(default=True)
    scan_count = fields.IntField(default=0)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "qr_code"
        unique_together = (("merchant_id", "kind", "scene"),)


class QrScan(Model):
    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    qr_code_id = fields.IntField(null=True)
    member_id = fields.IntField()
    scene = fields.CharField(max_length=64)
    event = fields.CharField(max_length=16)  # subscribe | scan | mp
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "qr_scan"
        indexes = (("qr_code_id", "id"),)
