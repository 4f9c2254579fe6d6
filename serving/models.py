from __future__ import annotations

from decimal import Decimal

from django.db import models


class UsageRecord(models.Model):
    """Append-only ledger: one row per gateway request, written in batches off the request path.

    `request_id` is unique so a batch replayed after a worker dies inserts each row exactly once
    (INSERT ... ON CONFLICT DO NOTHING).
    """

    request_id = models.CharField(max_length=64, unique=True)
    occurred_at = models.DateTimeField(db_index=True)
    team_id = models.BigIntegerField(db_index=True)
    api_key_id = models.BigIntegerField(null=True, blank=True)
    endpoint_id = models.BigIntegerField(null=True, blank=True)
    release_id = models.BigIntegerField(null=True, blank=True)
    model_version_id = models.BigIntegerField(null=True, blank=True)
    endpoint_name = models.CharField(max_length=100, blank=True, default="")
    release_name = models.CharField(max_length=100, blank=True, default="")
    replica = models.CharField(max_length=500, blank=True, default="")
    api = models.CharField(max_length=32, blank=True, default="")  # chat | completions | generate | ws ...
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=18, decimal_places=10, default=Decimal(0))
    ttft_ms = models.FloatField(null=True, blank=True)
    latency_ms = models.FloatField(default=0)
    status = models.CharField(max_length=16)  # ok | error | cancelled | rejected
    http_status = models.PositiveSmallIntegerField(default=200)
    finish_reason = models.CharField(max_length=32, blank=True, default="")
    error_type = models.CharField(max_length=64, blank=True, default="")
    # What admission reserved: the prompt's token bound and max_tokens. A backend that reports more
    # is charged as reported; these show by how much the reservation was exceeded.
    tokens_in_reserved = models.PositiveIntegerField(default=0, db_default=0)
    tokens_out_reserved = models.PositiveIntegerField(default=0, db_default=0)

    class Meta:
        ordering = ["-occurred_at"]
        indexes = [
            models.Index(fields=["team_id", "occurred_at"], name="usage_team_time_idx"),
            models.Index(fields=["endpoint_id", "occurred_at"], name="usage_endpoint_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.endpoint_name} {self.status}"


class ScopeLimit(models.Model):
    """Rate limits for a team, one of its endpoints, or one of its backends.

    Keys carry their own limits (ApiKey.rpm_limit, ...). The gateway enforces every limit that
    applies to a request in one atomic Redis script; an empty field means no limit of that kind.
    Neither endpoint nor backend set: the limit is the team's own.
    """

    team = models.ForeignKey("controlplane.Team", on_delete=models.CASCADE, related_name="scope_limits")
    endpoint = models.ForeignKey(
        "controlplane.Endpoint", null=True, blank=True, on_delete=models.CASCADE, related_name="scope_limits"
    )
    backend = models.ForeignKey(
        "controlplane.Backend", null=True, blank=True, on_delete=models.CASCADE, related_name="scope_limits"
    )
    rpm_limit = models.PositiveIntegerField(null=True, blank=True, help_text="Requests per minute")
    tpm_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Tokens (prompt + output) per minute"
    )
    concurrency_limit = models.PositiveIntegerField(null=True, blank=True, help_text="Requests in flight")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                name="scopelimit_one_target",
                condition=~models.Q(endpoint__isnull=False, backend__isnull=False),
            ),
            models.UniqueConstraint(
                fields=["team"],
                condition=models.Q(endpoint__isnull=True, backend__isnull=True),
                name="scopelimit_unique_team",
            ),
            models.UniqueConstraint(
                fields=["endpoint"],
                condition=models.Q(endpoint__isnull=False),
                name="scopelimit_unique_endpoint",
            ),
            models.UniqueConstraint(
                fields=["backend"],
                condition=models.Q(backend__isnull=False),
                name="scopelimit_unique_backend",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.scope} limits (team {self.team_id})"

    @property
    def scope(self) -> str:
        return "endpoint" if self.endpoint_id else "backend" if self.backend_id else "team"
