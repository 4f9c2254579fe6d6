from __future__ import annotations

from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models

from controlplane.models.backends import Backend
from controlplane.models.teams import Team


class ModelVersion(models.Model):
    """A pinned model: a Hugging Face repo at a resolved revision, or a local folder by content hash."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="model_versions")
    name = models.CharField(max_length=100, help_text="e.g. llama-3.1-8b-instruct@2026-11")
    hf_repo_id = models.CharField(max_length=200, blank=True, default="")
    hf_revision = models.CharField(max_length=64, blank=True, default="", help_text="Resolved commit sha")
    local_path = models.CharField(max_length=500, blank=True, default="")
    content_hash = models.CharField(max_length=64, blank=True, default="")
    tokenizer = models.CharField(max_length=200, blank=True, default="")
    # The name the backend knows the model by (OpenAI-compatible `model`); defaults to the repo id.
    served_model_name = models.CharField(max_length=200, blank=True, default="")
    context_window = models.PositiveIntegerField(default=4096, validators=[MinValueValidator(16)])
    input_price_per_mtok = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    output_price_per_mtok = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    default_parameters = models.JSONField(default=dict, blank=True)
    backend = models.ForeignKey(Backend, on_delete=models.PROTECT, related_name="model_versions")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["team", "name"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="modelversion_unique_team_name")]

    def __str__(self) -> str:
        return self.name
