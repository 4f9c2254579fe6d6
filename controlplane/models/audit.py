from __future__ import annotations

from django.db import models


class AuditEvent(models.Model):
    """Append-only, hash-chained record of every control-plane change and security event.

    A database trigger (migration 0003) rejects UPDATE and DELETE. `row_hash` is SHA-256 over
    `prev_hash` and a canonical serialisation of the row (controlplane.services.audit), so
    editing, inserting or removing a row breaks the chain at that point. Team and actor are
    plain ids, not foreign keys: deleting a team must not need to touch (or cascade into) its history.
    """

    occurred_at = models.DateTimeField(db_index=True)
    team_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    actor_type = models.CharField(max_length=16)  # user | api_key | system
    actor_id = models.CharField(max_length=64, blank=True, default="")
    actor_label = models.CharField(max_length=200, blank=True, default="")
    action = models.CharField(max_length=64, db_index=True)  # e.g. api_key.create
    target_type = models.CharField(max_length=64, blank=True, default="")
    target_id = models.CharField(max_length=64, blank=True, default="")
    target_label = models.CharField(max_length=200, blank=True, default="")
    diff = models.JSONField(default=dict, blank=True)  # {"before": {...}, "after": {...}}, secrets redacted
    outcome = models.CharField(max_length=16, default="success")  # success | failure
    request_id = models.CharField(max_length=64, blank=True, default="")
    ip = models.GenericIPAddressField(null=True, blank=True)
    prev_hash = models.CharField(max_length=64)
    row_hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["target_type", "target_id"], name="audit_target_idx")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.action} {self.target_type}:{self.target_id}"


class AuditDigest(models.Model):
    """Closes one period of the chain: its head hash and row count, signed (HMAC-SHA256) and
    chained to the previous digest's signature, CloudTrail-digest style. Append-only as well."""

    period_start = models.DateTimeField()
    period_end = models.DateTimeField(unique=True)
    first_event_id = models.BigIntegerField(null=True)
    last_event_id = models.BigIntegerField(null=True)
    event_count = models.PositiveBigIntegerField()
    head_hash = models.CharField(max_length=64)
    previous_signature = models.CharField(max_length=64, blank=True, default="")
    signature = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["period_end"]

    def __str__(self) -> str:
        return f"digest to {self.period_end:%Y-%m-%d %H:%M} ({self.event_count} events)"
