"""Prompt API shapes: output serializers, and strict inputs (unknown fields are a 400)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from controlplane.api.base import ScopedRelatedField, StrictInput, TeamField
from prompts.models import Prompt, PromptLabel, PromptVersion
from prompts.selectors import prompts_visible_to


class PromptSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    labels = serializers.SerializerMethodField(help_text="label name → version number")
    latest_version = serializers.SerializerMethodField()

    class Meta:
        model = Prompt
        fields = ["id", "team", "name", "description", "labels", "latest_version", "created_at"]

    def get_labels(self, prompt: Prompt) -> dict[str, int]:
        return {label.name: label.version.version for label in prompt.labels.all()}

    def get_latest_version(self, prompt: Prompt) -> int | None:
        return max((v.version for v in prompt.versions.all()), default=None)


class PromptVersionSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    prompt_name = serializers.CharField(source="prompt.name", read_only=True)
    created_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )
    labels: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="name", many=True, read_only=True
    )

    class Meta:
        model = PromptVersion
        fields = [
            "id",
            "prompt",
            "prompt_name",
            "version",
            "system_message",
            "template",
            "variables_schema",
            "commit_message",
            "labels",
            "created_by",
            "created_at",
        ]


class PromptLabelSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    version = serializers.IntegerField(source="version.version", read_only=True)
    version_id = serializers.IntegerField(read_only=True)

    class Meta:
        model = PromptLabel
        fields = ["id", "prompt", "name", "version", "version_id", "updated_at"]


class PromptInput(StrictInput):
    team = TeamField(required=False)
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True, default="")


class PromptVersionInput(StrictInput):
    prompt = ScopedRelatedField(prompts_visible_to)
    template = serializers.CharField(trim_whitespace=False, allow_blank=True)
    system_message = serializers.CharField(
        trim_whitespace=False, allow_blank=True, required=False, default=""
    )
    variables_schema = serializers.JSONField(required=False, default=dict)
    commit_message = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class LabelInput(StrictInput):
    prompt = ScopedRelatedField(prompts_visible_to)
    name = serializers.CharField(max_length=50)
    version = serializers.IntegerField(min_value=1, help_text="version number of this prompt")


class LabelMoveInput(StrictInput):
    version = serializers.IntegerField(min_value=1, help_text="version number of this prompt")


class RenderInput(StrictInput):
    variables = serializers.DictField(required=False, default=dict)


class PromptRenderInput(RenderInput):
    label = serializers.CharField(max_length=50, required=False)  # type: ignore[assignment]
    version = serializers.IntegerField(min_value=1, required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        if ("label" in attrs) == ("version" in attrs):
            raise serializers.ValidationError(
                {"label": ["give either label or version (a number), not both"]}
            )
        return attrs


class RenderedSerializer(serializers.Serializer):  # type: ignore[type-arg]
    prompt = serializers.CharField(source="prompt_name")
    version = serializers.IntegerField()
    system = serializers.CharField()
    text = serializers.CharField()
    messages = serializers.ListField(source="as_messages", child=serializers.DictField())
