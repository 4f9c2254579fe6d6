from __future__ import annotations

from django.db import models

from controlplane.models.teams import Team


class BackendKind(models.TextChoices):
    TGI = "tgi", "Text Generation Inference"
    OPENAI = "openai", "Hosted OpenAI-compatible API"
    ENGINE = "engine", "Switchboard embedded engine"


class Backend(models.Model):
    """An inference server (one or more replicas) that model versions are served from."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="backends")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=BackendKind.choices)
    # Fernet token (controlplane.crypto); never rendered, logged or audited in clear.
    credentials_encrypted = models.TextField(blank=True, default="")
    max_concurrency = models.PositiveIntegerField(default=64)
    health_check_interval_s = models.PositiveIntegerField(default=10)
    circuit_failure_threshold = models.PositiveIntegerField(default=5)
    circuit_cooldown_s = models.PositiveIntegerField(default=30)
    connect_timeout_s = models.FloatField(default=3.0)
    first_token_timeout_s = models.FloatField(default=30.0)
    total_timeout_s = models.FloatField(default=300.0)
    last_tested_at = models.DateTimeField(null=True, blank=True)
    last_test_result = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["team", "name"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="backend_unique_team_name")]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    @property
    def has_credentials(self) -> bool:
        return bool(self.credentials_encrypted)


class BackendReplica(models.Model):
    backend = models.ForeignKey(Backend, on_delete=models.CASCADE, related_name="replicas")
    url = models.URLField(max_length=500)
    enabled = models.BooleanField(default=True)
    weight = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["backend", "id"]
        constraints = [models.UniqueConstraint(fields=["backend", "url"], name="replica_unique_backend_url")]

    def __str__(self) -> str:
        return self.url
