"""Model versions and releases API. Releases are immutable: create, list and read only."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.api.base import ScopedRelatedField, StrictInput, TeamField, TeamScopedViewSet
from controlplane.models import ModelVersion, Release
from controlplane.permissions import ApiKeyUser, actor_for
from controlplane.selectors import backends_for, model_versions_for, prompt_versions_for, releases_for
from controlplane.services.catalog import model_version_create, model_version_delete, model_version_update
from controlplane.services.releases import release_create


class ModelVersionSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "team",
            "name",
            "hf_repo_id",
            "hf_revision",
            "local_path",
            "content_hash",
            "tokenizer",
            "served_model_name",
            "context_window",
            "input_price_per_mtok",
            "output_price_per_mtok",
            "default_parameters",
            "backend",
            "created_at",
        ]


def _price() -> serializers.DecimalField:
    return serializers.DecimalField(
        max_digits=12, decimal_places=6, min_value=0, required=False, help_text="USD per million tokens"
    )


class ModelVersionUpdateInput(StrictInput):
    tokenizer = serializers.CharField(max_length=200, required=False, allow_blank=True)
    served_model_name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    context_window = serializers.IntegerField(min_value=16, required=False)
    input_price_per_mtok = _price()
    output_price_per_mtok = _price()
    default_parameters = serializers.JSONField(required=False)
    backend = ScopedRelatedField(backends_for, required=False)


class ModelVersionInput(ModelVersionUpdateInput):
    team = TeamField(required=False)
    name = serializers.CharField(max_length=100)
    backend = ScopedRelatedField(backends_for)
    hf_repo_id = serializers.CharField(max_length=200, required=False, allow_blank=True)
    hf_revision = serializers.CharField(
        max_length=64,
        required=False,
        allow_blank=True,
        help_text="A 40-character commit sha (pinned as given), or a branch/tag resolved on the Hub",
    )
    local_path = serializers.CharField(
        max_length=500,
        required=False,
        allow_blank=True,
        help_text="An absolute folder on the server; pinned by content hash",
    )


class ModelVersionViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, TeamScopedViewSet
):
    """Pinned models. The identity (repo, revision, folder, hash) is fixed; prices, context window,
    default parameters and the serving backend can change."""

    serializer_class = ModelVersionSerializer

    def get_queryset(self) -> Any:
        return model_versions_for(self.request.user)

    @extend_schema(request=ModelVersionInput, responses={201: ModelVersionSerializer})
    def create(self, request: Request) -> Response:
        data = self.input(ModelVersionInput)
        self.authorize_create(data["team"])
        model_version = model_version_create(actor=actor_for(request), **data)
        return Response(self.get_serializer(model_version).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=ModelVersionUpdateInput, responses=ModelVersionSerializer)
    def partial_update(self, request: Request, pk: str) -> Response:
        model_version = self.get_object()
        changes = self.input(ModelVersionUpdateInput, partial=True)
        model_version = model_version_update(model_version=model_version, actor=actor_for(request), **changes)
        return Response(self.get_serializer(model_version).data)

    def perform_destroy(self, instance: ModelVersion) -> None:
        model_version_delete(model_version=instance, actor=actor_for(self.request))


class ReleaseSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    created_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )

    class Meta:
        model = Release
        fields = [
            "id",
            "team",
            "name",
            "model_version",
            "prompt_version",
            "generation_defaults",
            "retrieval_config",
            "guardrail_policy",
            "notes",
            "created_by",
            "created_at",
        ]


class ReleaseInput(StrictInput):
    team = TeamField(required=False)
    name = serializers.CharField(max_length=100)
    model_version = ScopedRelatedField(model_versions_for)
    prompt_version = ScopedRelatedField(prompt_versions_for, required=False, allow_null=True)
    generation_defaults = serializers.JSONField(required=False)
    retrieval_config = serializers.JSONField(required=False, allow_null=True)
    guardrail_policy = serializers.JSONField(required=False, allow_null=True)
    notes = serializers.CharField(required=False, allow_blank=True)


class ReleaseViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TeamScopedViewSet):
    """Immutable bundles (model version, prompt version, generation defaults, retrieval and
    guardrail slots). There is no update: changing anything is a new release."""

    serializer_class = ReleaseSerializer
    http_method_names = ["get", "post", "head", "options"]

    def get_queryset(self) -> Any:
        return releases_for(self.request.user).select_related("created_by")

    @extend_schema(request=ReleaseInput, responses={201: ReleaseSerializer})
    def create(self, request: Request) -> Response:
        data = self.input(ReleaseInput)
        self.authorize_create(data["team"])
        user = request.user
        created_by_id = None if isinstance(user, ApiKeyUser) else user.pk
        release = release_create(actor=actor_for(request), created_by_id=created_by_id, **data)
        return Response(self.get_serializer(release).data, status=status.HTTP_201_CREATED)
