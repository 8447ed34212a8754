"""Bulk member imports: a job with progress, and the rows it rejected with their reasons."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class ImportJob(Model):
    id = fields.IntField(primary_key=True)
    merchant_id = fields.IntField()
    staff_id = fields.IntField(null=True)
    filename = fields.CharField(max_length=255, default="")
    status = fields.CharField(max_length=12, default="pending")  # pending | running | done | failed
    total_rows = fields.IntField(default=0)
    processed_rows = fields.IntField(default=0)
    created_rows = fields.IntField(default=0)
    unchanged_rows = fields.IntField(default=0)
    rejected_rows = fields.IntField(default=0)
    error = fields.TextField(default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    started_at = fields.DatetimeField(null=True)
    finished_at = fields.DatetimeField(null=True)

    class Meta:
        table = "import_job"


class ImportReject(Model):
    id = fields.BigIntField(primary_key=True)
    job_id = fields.IntField()
    line = fields.IntField()
    reason = fields.CharField(max_length=255)

    class Meta:
        table = "import_reject"
        indexes = (("job_id", "line"),)
