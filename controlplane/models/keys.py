from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone

from controlplane.models.teams import Team


class KeyScope(models.TextChoices):
    INFERENCE = "inference", "Inference (gateway APIs)"
    MANAGEMENT_READ = "management:read", "Management API, read"
    MANAGEMENT_WRITE = "management:write", "Management API, write"


class ApiKey(models.Model):
    """An API key. Only a lookup id and an HMAC-SHA256 digest are stored; the secret is shown once.

    Secrets look like `sb-<lookup_id>-<random>`; the lookup id finds the row, the digest (peppered
    with SWITCHBOARD_KEY_PEPPER) proves possession, compared in constant time.
    """

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    lookup_id = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    scopes = ArrayField(models.CharField(max_length=32, choices=KeyScope.choices), default=list)
    # Empty means every endpoint of the team.
    endpoints = models.ManyToManyField("controlplane.Endpoint", blank=True, related_name="api_keys")
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Set on the old key when it is rotated: it stays valid until then, then stops.
    rotated_to = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="rotated_from"
    )
    rpm_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Requests per minute; empty = unlimited"
    )
    tpm_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Tokens per minute; empty = unlimited"
    )
    concurrency_limit = models.PositiveIntegerField(null=True, blank=True, help_text="In-flight requests")
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["team", "name"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="apikey_unique_team_name")]

    def __str__(self) -> str:
        return f"{self.name} (sb-{self.lookup_id}-…)"

    @property
    def display_prefix(self) -> str:
        return f"sb-{self.lookup_id}-…"

    def is_active(self, now: datetime | None = None) -> bool:
        now = now or timezone.now()
        if self.revoked_at is not None and self.revoked_at <= now:
            return False
        return not (self.expires_at is not None and self.expires_at <= now)
