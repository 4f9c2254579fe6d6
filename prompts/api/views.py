"""Prompts API: prompts, their immutable versions, movable labels, and render previews.

Team-scoped like every management endpoint: other teams' prompts are invisible (404 on detail,
"does not exist" when named in a body), viewers read and preview, owners/admins/developers write.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.api.base import TeamScopedViewSet
from controlplane.permissions import actor_for, role_in
from prompts.api.serializers import (
    LabelInput,
    LabelMoveInput,
    PromptInput,
    PromptLabelSerializer,
    PromptRenderInput,
    PromptSerializer,
    PromptVersionInput,
    PromptVersionSerializer,
    RenderedSerializer,
    RenderInput,
)
from prompts.models import Prompt, PromptVersion
from prompts.rendering import PromptRenderError
from prompts.selectors import prompt_labels_visible_to, prompt_versions_visible_to, prompts_visible_to
from prompts.services import prompt_create, prompt_label_move, prompt_render, prompt_version_create


def _version_of(prompt: Prompt, number: int, field: str = "version") -> PromptVersion:
    version = PromptVersion.objects.select_related("prompt").filter(prompt=prompt, version=number).first()
    if version is None:
        raise serializers.ValidationError({field: [f"prompt {prompt.name!r} has no version {number}"]})
    return version


def _render_response(version: PromptVersion, variables: dict[str, Any]) -> Response:
    try:
        rendered = prompt_render(version, variables)
    except PromptRenderError as exc:
        return Response(
            {"detail": "the prompt could not be rendered", "problems": exc.problems},
            status=status.HTTP_400_BAD_REQUEST,
        )
    return Response(RenderedSerializer(rendered).data)


class ReadActionsMixin:
    """Render previews change nothing: any role in the team may POST them."""

    read_actions: tuple[str, ...] = ("render",)

    def can_change(self, obj: Any, team_id: int) -> bool:
        if getattr(self, "action", None) in self.read_actions:
            return role_in(self.request.user, team_id) is not None  # type: ignore[attr-defined]
        return super().can_change(obj, team_id)  # type: ignore[misc]


class PromptViewSet(ReadActionsMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, TeamScopedViewSet):
    serializer_class = PromptSerializer

    def get_queryset(self) -> Any:
        return prompts_visible_to(self.request.user).prefetch_related("labels__version", "versions")

    @extend_schema(request=PromptInput, responses={201: PromptSerializer})
    def create(self, request: Request) -> Response:
        data = self.input(PromptInput)
        self.authorize_create(data["team"])
        prompt = prompt_create(
            team=data["team"], name=data["name"], description=data["description"], actor=actor_for(request)
        )
        return Response(PromptSerializer(prompt).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=PromptRenderInput, responses=RenderedSerializer)
    @action(detail=True, methods=["post"])
    def render(self, request: Request, pk: str) -> Response:
        """Renders the version a label points at (what the gateway serves), or a version by number."""
        prompt = self.get_object()
        data = self.input(PromptRenderInput)
        if "version" in data:
            return _render_response(_version_of(prompt, data["version"]), data["variables"])
        label = prompt.labels.select_related("version__prompt").filter(name=data["label"]).first()
        if label is None:
            raise serializers.ValidationError(
                {"label": [f"prompt {prompt.name!r} has no label {data['label']!r}"]}
            )
        return _render_response(label.version, data["variables"])


class PromptVersionViewSet(
    ReadActionsMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, TeamScopedViewSet
):
    """Immutable versions: create, list (?prompt=<id>), read. No update or delete."""

    serializer_class = PromptVersionSerializer
    team_lookup = "prompt__team_id"

    def get_queryset(self) -> Any:
        versions = prompt_versions_visible_to(self.request.user).prefetch_related("labels")
        prompt_id = self.request.query_params.get("prompt")
        if prompt_id is not None:
            if not prompt_id.isdigit():
                raise serializers.ValidationError({"prompt": ["must be a prompt id (an integer)"]})
            versions = versions.filter(prompt_id=int(prompt_id))
        return versions.order_by("prompt_id", "-version")

    @extend_schema(request=PromptVersionInput, responses={201: PromptVersionSerializer})
    def create(self, request: Request) -> Response:
        data = self.input(PromptVersionInput)
        prompt = data.pop("prompt")
        self.authorize_create(prompt.team)
        user = request.user if isinstance(request.user, AbstractBaseUser) else None  # not for API keys
        version = prompt_version_create(prompt=prompt, actor=actor_for(request), created_by=user, **data)
        return Response(PromptVersionSerializer(version).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=RenderInput, responses=RenderedSerializer)
    @action(detail=True, methods=["post"])
    def render(self, request: Request, pk: str) -> Response:
        """Preview: renders this version with the given variables; writes nothing."""
        version = self.get_object()
        return _render_response(version, self.input(RenderInput)["variables"])


class PromptLabelViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TeamScopedViewSet):
    """Labels (`production`, `staging`, ...): POST creates or moves one; POST {id}/move/ moves it."""

    serializer_class = PromptLabelSerializer
    team_lookup = "prompt__team_id"

    def get_queryset(self) -> Any:
        labels = prompt_labels_visible_to(self.request.user)
        prompt_id = self.request.query_params.get("prompt")
        if prompt_id is not None:
            if not prompt_id.isdigit():
                raise serializers.ValidationError({"prompt": ["must be a prompt id (an integer)"]})
            labels = labels.filter(prompt_id=int(prompt_id))
        return labels.order_by("prompt_id", "name")

    @extend_schema(request=LabelInput, responses={200: PromptLabelSerializer, 201: PromptLabelSerializer})
    def create(self, request: Request) -> Response:
        data = self.input(LabelInput)
        prompt = data["prompt"]
        self.authorize_create(prompt.team)
        existed = prompt.labels.filter(name=data["name"]).exists()
        label = prompt_label_move(
            prompt=prompt,
            label=data["name"],
            version=_version_of(prompt, data["version"]),
            actor=actor_for(request),
        )
        code = status.HTTP_200_OK if existed else status.HTTP_201_CREATED
        return Response(PromptLabelSerializer(label).data, status=code)

    @extend_schema(request=LabelMoveInput, responses=PromptLabelSerializer)
    @action(detail=True, methods=["post"])
    def move(self, request: Request, pk: str) -> Response:
        label = self.get_object()
        number = self.input(LabelMoveInput)["version"]
        moved = prompt_label_move(
            prompt=label.prompt,
            label=label.name,
            version=_version_of(label.prompt, number),
            actor=actor_for(request),
        )
        return Response(PromptLabelSerializer(moved).data)
