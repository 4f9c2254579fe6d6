"""API keys API. The secret is in the response to create and rotate, and nowhere else, ever."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.api.base import ScopedRelatedField, StrictInput, TeamField, TeamScopedViewSet
from controlplane.models import ApiKey
from controlplane.permissions import ApiKeyUser, actor_for, can_administer
from controlplane.selectors import api_keys_for, endpoints_for
from controlplane.services.common import MAX_INT32
from controlplane.services.keys import (
    DEFAULT_ROTATION_GRACE,
    api_key_create,
    api_key_revoke,
    api_key_rotate,
    api_key_update,
)


class ApiKeySerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    prefix = serializers.CharField(source="display_prefix", read_only=True)
    active = serializers.SerializerMethodField()
    created_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "team",
            "name",
            "prefix",
            "scopes",
            "endpoints",
            "expires_at",
            "revoked_at",
            "active",
            "rotated_to",
            "rpm_limit",
            "tpm_limit",
            "concurrency_limit",
            "last_used_at",
            "created_by",
            "created_at",
        ]

    def get_active(self, key: ApiKey) -> bool:
        return key.is_active()


class ApiKeyWithSecretSerializer(ApiKeySerializer):
    secret = serializers.SerializerMethodField()

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "secret"]

    def get_secret(self, key: ApiKey) -> str:
        """The full key, shown in this response only: it is not stored and cannot be shown again."""
        return str(self.context["secret"])


def _limit_field() -> serializers.IntegerField:
    return serializers.IntegerField(min_value=1, max_value=MAX_INT32, allow_null=True, required=False)


class ApiKeyInput(StrictInput):
    team = TeamField(required=False)
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(child=serializers.CharField(max_length=32), min_length=1)
    endpoints = serializers.ListField(child=ScopedRelatedField(endpoints_for), required=False)
    expires_at = serializers.DateTimeField(allow_null=True, required=False)
    rpm_limit = _limit_field()
    tpm_limit = _limit_field()
    concurrency_limit = _limit_field()


class ApiKeyUpdateInput(ApiKeyInput):
    team = None  # type: ignore[assignment]


class RotateInput(StrictInput):
    grace_seconds = serializers.IntegerField(
        min_value=0, max_value=MAX_INT32, default=int(DEFAULT_ROTATION_GRACE.total_seconds())
    )


class ApiKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TeamScopedViewSet):
    """Keys of your teams. Developers create keys and manage their own; owners and admins manage all."""

    serializer_class = ApiKeySerializer

    def get_queryset(self) -> Any:
        return api_keys_for(self.request.user).select_related("created_by")

    def can_change(self, obj: ApiKey, team_id: int) -> bool:
        user = self.request.user
        if can_administer(user, team_id):
            return True
        own = not isinstance(user, ApiKeyUser) and obj.created_by_id == user.pk
        return own and self.can_write_team(team_id)

    @property
    def change_denied_message(self) -> str:
        return (
            "an API key can be changed, rotated or revoked by its team's owners and admins, or by "
            "the console user who created it; management keys cannot change keys"
        )

    def _with_secret(self, key: ApiKey, secret: str, code: int) -> Response:
        context = {**self.get_serializer_context(), "secret": secret}
        return Response(ApiKeyWithSecretSerializer(key, context=context).data, status=code)

    @extend_schema(request=ApiKeyInput, responses={201: ApiKeyWithSecretSerializer})
    def create(self, request: Request) -> Response:
        data = self.input(ApiKeyInput)
        self.authorize_create(data["team"])
        user = request.user
        key, secret = api_key_create(
            actor=actor_for(request), created_by_id=None if isinstance(user, ApiKeyUser) else user.pk, **data
        )
        return self._with_secret(key, secret, status.HTTP_201_CREATED)

    @extend_schema(request=ApiKeyUpdateInput, responses=ApiKeySerializer)
    def partial_update(self, request: Request, pk: str) -> Response:
        key = self.get_object()
        key = api_key_update(key=key, actor=actor_for(request), **self.input(ApiKeyUpdateInput, partial=True))
        return Response(self.get_serializer(key).data)

    @extend_schema(request=None, responses=ApiKeySerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str) -> Response:
        key = api_key_revoke(key=self.get_object(), actor=actor_for(request))
        return Response(self.get_serializer(key).data)

    @extend_schema(request=RotateInput, responses={201: ApiKeyWithSecretSerializer})
    @action(detail=True, methods=["post"])
    def rotate(self, request: Request, pk: str) -> Response:
        old = self.get_object()
        grace = timedelta(seconds=self.input(RotateInput)["grace_seconds"])
        key, secret = api_key_rotate(key=old, grace=grace, actor=actor_for(request))
        return self._with_secret(key, secret, status.HTTP_201_CREATED)
