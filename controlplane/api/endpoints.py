"""Endpoints API: switch traffic, roll back and set fallbacks, each one audited service call."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.api.base import ScopedRelatedField, StrictInput, TeamField, TeamScopedViewSet
from controlplane.models import Endpoint, TrafficSplit
from controlplane.permissions import actor_for
from controlplane.selectors import endpoint_fallback_ids, endpoints_for, releases_for
from controlplane.services.endpoints import (
    TrafficEntry,
    endpoint_create,
    endpoint_delete,
    endpoint_rollback,
    endpoint_set_fallbacks,
    endpoint_set_traffic,
    endpoint_update,
)


class TrafficSplitSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    release_name = serializers.CharField(source="release.name", read_only=True)

    class Meta:
        model = TrafficSplit
        fields = ["release", "release_name", "weight"]


class EndpointSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    traffic = TrafficSplitSerializer(many=True, read_only=True)
    fallbacks = serializers.SerializerMethodField()

    class Meta:
        model = Endpoint
        fields = [
            "id",
            "team",
            "name",
            "description",
            "config_version",
            "traffic",
            "fallbacks",
            "previous_policy",
            "created_at",
            "updated_at",
        ]

    def get_fallbacks(self, endpoint: Endpoint) -> list[int]:
        """Release ids in the order they are tried."""
        return endpoint_fallback_ids(endpoint)


class TrafficEntryInput(StrictInput):
    release = ScopedRelatedField(releases_for)
    weight = serializers.IntegerField(min_value=0, max_value=100)


class TrafficInput(StrictInput):
    traffic = TrafficEntryInput(many=True, help_text="Releases with integer weights that sum to 100")


class FallbacksInput(StrictInput):
    releases = serializers.ListField(child=ScopedRelatedField(releases_for), help_text="In the order tried")


class EndpointInput(StrictInput):
    team = TeamField(required=False)
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True)
    traffic = TrafficEntryInput(many=True, required=False)
    fallbacks = serializers.ListField(child=ScopedRelatedField(releases_for), required=False)


class EndpointUpdateInput(StrictInput):
    description = serializers.CharField(allow_blank=True)


def _entries(items: list[dict[str, Any]]) -> list[TrafficEntry]:
    return [TrafficEntry(release=item["release"], weight=item["weight"]) for item in items]


class EndpointViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, TeamScopedViewSet
):
    """The stable names clients call. Each change bumps `config_version` and reaches every web
    process within a second."""

    serializer_class = EndpointSerializer

    def get_queryset(self) -> Any:
        return endpoints_for(self.request.user).prefetch_related("traffic__release")

    def _render(self, endpoint: Endpoint, code: int = status.HTTP_200_OK) -> Response:
        return Response(self.get_serializer(self.get_queryset().get(pk=endpoint.pk)).data, status=code)

    @extend_schema(request=EndpointInput, responses={201: EndpointSerializer})
    def create(self, request: Request) -> Response:
        data = self.input(EndpointInput)
        self.authorize_create(data["team"])
        endpoint = endpoint_create(
            team=data["team"],
            name=data["name"],
            description=data.get("description", ""),
            traffic=_entries(data.get("traffic", [])),
            fallbacks=data.get("fallbacks", []),
            actor=actor_for(request),
        )
        return self._render(endpoint, status.HTTP_201_CREATED)

    @extend_schema(request=EndpointUpdateInput, responses=EndpointSerializer)
    def partial_update(self, request: Request, pk: str) -> Response:
        endpoint = self.get_object()
        description = self.input(EndpointUpdateInput)["description"]
        return self._render(
            endpoint_update(endpoint=endpoint, description=description, actor=actor_for(request))
        )

    def perform_destroy(self, instance: Endpoint) -> None:
        endpoint_delete(endpoint=instance, actor=actor_for(self.request))

    @extend_schema(request=TrafficInput, responses=EndpointSerializer)
    @action(detail=True, methods=["post"])
    def traffic(self, request: Request, pk: str) -> Response:
        """Switches to a new traffic policy; the current one becomes `previous_policy`."""
        endpoint = self.get_object()
        entries = _entries(self.input(TrafficInput)["traffic"])
        return self._render(
            endpoint_set_traffic(endpoint=endpoint, traffic=entries, actor=actor_for(request))
        )

    @extend_schema(request=None, responses=EndpointSerializer)
    @action(detail=True, methods=["post"])
    def rollback(self, request: Request, pk: str) -> Response:
        """Restores `previous_policy` (and keeps the current one as the new previous)."""
        return self._render(endpoint_rollback(endpoint=self.get_object(), actor=actor_for(request)))

    @extend_schema(request=FallbacksInput, responses=EndpointSerializer)
    @action(detail=True, methods=["post"])
    def fallbacks(self, request: Request, pk: str) -> Response:
        endpoint = self.get_object()
        releases = self.input(FallbacksInput)["releases"]
        return self._render(
            endpoint_set_fallbacks(endpoint=endpoint, releases=releases, actor=actor_for(request))
        )
