from __future__ import annotations

from django.conf import settings
from django.db import models


class Prompt(models.Model):
    """A named prompt; its content lives in immutable versions, addressed by movable labels."""

    team = models.ForeignKey("controlplane.Team", on_delete=models.CASCADE, related_name="prompts")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["team", "name"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="prompt_unique_team_name")]

    def __str__(self) -> str:
        return self.name


class PromptVersion(models.Model):
    """Immutable: a change is a new version. `variables_schema` is a JSON Schema for the variables."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    system_message = models.TextField(blank=True, default="")
    template = models.TextField()
    variables_schema = models.JSONField(default=dict, blank=True)
    commit_message = models.CharField(max_length=200, blank=True, default="")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["prompt", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["prompt", "version"], name="promptversion_unique_number")
        ]

    def __str__(self) -> str:
        return f"{self.prompt.name} v{self.version}"


class PromptLabel(models.Model):
    """A movable pointer (`production`, `staging`, any name) to one version of a prompt."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="labels")
    name = models.CharField(max_length=50)
    version = models.ForeignKey(PromptVersion, on_delete=models.PROTECT, related_name="labels")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["prompt", "name"]
        constraints = [models.UniqueConstraint(fields=["prompt", "name"], name="promptlabel_unique_name")]

    def __str__(self) -> str:
        return f"{self.prompt.name}@{self.name}"
