from __future__ import annotations

from django.conf import settings
from django.db import models

from controlplane.models.catalog import ModelVersion
from controlplane.models.teams import Team


class Release(models.Model):
    """An immutable bundle of what serves a request. Rolling back any part is switching releases."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="releases")
    name = models.CharField(max_length=100)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="releases")
    prompt_version = models.ForeignKey(
        "prompts.PromptVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="releases"
    )
    generation_defaults = models.JSONField(default=dict, blank=True)
    # Slots filled by the retrieval and guardrail features; stored with the release so they roll back with it.
    retrieval_config = models.JSONField(null=True, blank=True)
    guardrail_policy = models.JSONField(null=True, blank=True)
    notes = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["team", "-created_at"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="release_unique_team_name")]

    def __str__(self) -> str:
        return self.name
