"""Backends API. `credentials` is write-only; responses carry only `has_credentials`."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.api.base import StrictInput, TeamField, TeamScopedViewSet
from controlplane.models import Backend, BackendKind, BackendReplica
from controlplane.permissions import actor_for
from controlplane.selectors import backends_for
from controlplane.services.backends import (
    SETTING_FIELDS,
    ReplicaSpec,
    backend_create,
    backend_delete,
    backend_test_connection,
    backend_update,
)
from controlplane.services.common import MAX_INT32


class ReplicaSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    class Meta:
        model = BackendReplica
        fields = ["url", "enabled", "weight"]


class BackendSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    replicas = ReplicaSerializer(many=True, read_only=True)
    has_credentials = serializers.BooleanField(read_only=True)

    class Meta:
        model = Backend
        fields = [
            "id",
            "team",
            "name",
            "kind",
            "replicas",
            "has_credentials",
            *SETTING_FIELDS,
            "last_tested_at",
            "last_test_result",
            "created_at",
        ]


class ReplicaInput(StrictInput):
    url = serializers.CharField(max_length=500)
    enabled = serializers.BooleanField(default=True)
    weight = serializers.IntegerField(min_value=1, max_value=1000, default=1)


class BackendInput(StrictInput):
    team = TeamField(required=False)
    name = serializers.CharField(max_length=100)
    kind = serializers.ChoiceField(choices=BackendKind.choices)
    replicas = ReplicaInput(many=True, required=False)
    credentials = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        max_length=4000,
        trim_whitespace=True,
        style={"input_type": "password"},
        help_text="API key or token sent as a bearer credential. Write-only; empty removes it.",
    )
    max_concurrency = serializers.IntegerField(min_value=1, max_value=MAX_INT32, required=False)
    health_check_interval_s = serializers.IntegerField(min_value=1, max_value=MAX_INT32, required=False)
    circuit_failure_threshold = serializers.IntegerField(min_value=1, max_value=MAX_INT32, required=False)
    circuit_cooldown_s = serializers.IntegerField(min_value=1, max_value=MAX_INT32, required=False)
    connect_timeout_s = serializers.FloatField(min_value=0.01, max_value=86400, required=False)
    first_token_timeout_s = serializers.FloatField(min_value=0.01, max_value=86400, required=False)
    total_timeout_s = serializers.FloatField(min_value=0.01, max_value=86400, required=False)


class BackendUpdateInput(BackendInput):
    team = None  # type: ignore[assignment]
    kind = None  # type: ignore[assignment]


class TestResultSerializer(serializers.Serializer):  # type: ignore[type-arg]
    ok = serializers.BooleanField()
    detail = serializers.CharField()
    replicas = serializers.ListField(child=serializers.DictField())


def _split(data: dict[str, Any]) -> tuple[dict[str, Any], list[ReplicaSpec] | None]:
    settings = {name: data.pop(name) for name in list(data) if name in SETTING_FIELDS}
    replicas = data.pop("replicas", None)
    specs = None if replicas is None else [ReplicaSpec(**replica) for replica in replicas]
    return settings, specs


class BackendViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, TeamScopedViewSet
):
    """Inference servers of your teams: TGI, the embedded engine, or a hosted OpenAI-compatible API."""

    serializer_class = BackendSerializer

    def get_queryset(self) -> Any:
        return backends_for(self.request.user)

    @extend_schema(request=BackendInput, responses={201: BackendSerializer})
    def create(self, request: Request) -> Response:
        data = self.input(BackendInput)
        self.authorize_create(data["team"])
        settings, replicas = _split(data)
        backend = backend_create(
            actor=actor_for(request),
            settings=settings,
            replicas=replicas or [],
            credentials=data.pop("credentials", ""),
            **data,
        )
        return Response(self.get_serializer(backend).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=BackendUpdateInput, responses=BackendSerializer)
    def partial_update(self, request: Request, pk: str) -> Response:
        backend = self.get_object()
        data = self.input(BackendUpdateInput, partial=True)
        settings, replicas = _split(data)
        backend = backend_update(
            backend=backend, actor=actor_for(request), settings=settings, replicas=replicas, **data
        )
        return Response(self.get_serializer(backend).data)

    def perform_destroy(self, instance: Backend) -> None:
        backend_delete(backend=instance, actor=actor_for(self.request))

    @extend_schema(request=None, responses=TestResultSerializer)
    @action(detail=True, methods=["post"], url_path="test-connection")
    def test_connection(self, request: Request, pk: str) -> Response:
        """Calls each enabled replica (`/info`, or `/v1/models` for hosted APIs) and records the result.
        A failed test is a 200 with `ok: false`: the call worked, the backend did not."""
        result = backend_test_connection(backend=self.get_object(), actor=actor_for(request))
        return Response(result)
