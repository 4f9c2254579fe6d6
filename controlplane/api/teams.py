"""Teams and memberships API."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import exceptions, mixins, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.api.base import ADMIN, StrictInput, TeamField, TeamScopedViewSet
from controlplane.models import Membership, Role, Team
from controlplane.permissions import ApiKeyUser, actor_for, role_in
from controlplane.selectors import memberships_for, teams_for
from controlplane.services.teams import (
    membership_add,
    membership_change_role,
    membership_remove,
    team_create,
    team_update,
)


class TeamSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    member_count = serializers.IntegerField(read_only=True)
    my_role = serializers.SerializerMethodField()

    class Meta:
        model = Team
        fields = ["id", "name", "slug", "member_count", "my_role", "created_at"]

    @extend_schema_field(
        serializers.CharField(allow_null=True, help_text="owner, admin, developer or viewer")
    )
    def get_my_role(self, team: Team) -> str | None:
        user = self.context["request"].user
        if getattr(user, "is_superuser", False) or not hasattr(team, "member_role"):
            return role_in(user, team.pk)  # superusers and API keys: not a membership row
        return team.member_role


class TeamInput(StrictInput):
    name = serializers.CharField(max_length=100)
    slug = serializers.SlugField(max_length=100, required=False)


class TeamViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TeamScopedViewSet):
    """Teams you are a member of. Staff users create teams (and become their owner); owners and
    admins rename them."""

    serializer_class = TeamSerializer
    write_role = ADMIN
    team_lookup = "pk"

    def get_queryset(self) -> Any:
        return teams_for(self.request.user)

    @extend_schema(request=TeamInput, responses={201: TeamSerializer})
    def create(self, request: Request) -> Response:
        user = request.user
        if isinstance(user, ApiKeyUser) or not (user.is_staff or user.is_superuser):
            raise exceptions.PermissionDenied("only staff users create teams")
        data = self.input(TeamInput)
        team = team_create(name=data["name"], slug=data.get("slug", ""), owner=user, actor=actor_for(request))
        return Response(
            self.get_serializer(self.get_queryset().get(pk=team.pk)).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(request=TeamInput, responses=TeamSerializer)
    def partial_update(self, request: Request, pk: str) -> Response:
        team = self.get_object()
        data = self.input(TeamInput, partial=True)
        team_update(team=team, name=data.get("name"), slug=data.get("slug"), actor=actor_for(request))
        return Response(self.get_serializer(self.get_queryset().get(pk=team.pk)).data)


class MembershipSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    username = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "team", "user", "username", "role", "created_at"]


class MembershipInput(StrictInput):
    team = TeamField(required=False)
    username = serializers.SlugRelatedField(slug_field="username", queryset=get_user_model().objects.all())
    role = serializers.ChoiceField(choices=Role.choices)


class RoleInput(StrictInput):
    role = serializers.ChoiceField(choices=Role.choices)


class MembershipViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, TeamScopedViewSet
):
    """Who is in your teams, with which role. Owners and admins add, change and remove members;
    only owners grant or take away the owner role, and a team always keeps one owner."""

    serializer_class = MembershipSerializer
    write_role = ADMIN
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self) -> Any:
        queryset = memberships_for(self.request.user)
        team = self.request.query_params.get("team")
        return queryset.filter(team_id=team) if team and team.isdigit() else queryset

    def _require_owner_for(self, team_id: int, *roles: str) -> None:
        if Role.OWNER in roles and role_in(self.request.user, team_id) != Role.OWNER:
            raise exceptions.PermissionDenied("only an owner can grant or remove the owner role")

    @extend_schema(request=MembershipInput, responses={201: MembershipSerializer})
    def create(self, request: Request) -> Response:
        data = self.input(MembershipInput)
        self.authorize_create(data["team"])
        self._require_owner_for(data["team"].pk, data["role"])
        membership = membership_add(
            team=data["team"], user=data["username"], role=data["role"], actor=actor_for(request)
        )
        return Response(self.get_serializer(membership).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=RoleInput, responses=MembershipSerializer)
    def partial_update(self, request: Request, pk: str) -> Response:
        membership = self.get_object()
        role = self.input(RoleInput)["role"]
        self._require_owner_for(membership.team_id, role, membership.role)
        membership = membership_change_role(membership=membership, role=role, actor=actor_for(request))
        return Response(self.get_serializer(membership).data)

    def perform_destroy(self, instance: Membership) -> None:
        self._require_owner_for(instance.team_id, instance.role)
        membership_remove(membership=instance, actor=actor_for(self.request))
