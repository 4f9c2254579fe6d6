"""Building blocks shared by the management viewsets: team-scoped permissions, team-scoped
related fields, and input serializers that reject fields they do not know."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import exceptions, serializers, viewsets
from rest_framework.request import Request

from controlplane.models import Team
from controlplane.permissions import TeamScoped, can_administer, can_write, role_in, team_id_of, visible_teams

# Who may change a viewset's objects: "write" = owner, admin, developer; "admin" = owner, admin.
WRITE = "write"
ADMIN = "admin"


class TeamRolePermission(TeamScoped):
    """Reads need any role in the object's team; writes need the view's `write_role` there
    (or whatever the view's `can_change` decides, for per-object rules such as key ownership)."""

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        team_id = team_id_of(obj, getattr(view, "team_lookup", "team_id"))
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return role_in(request.user, team_id) is not None
        # DRF shows `message` on refusal; say what would be needed instead of a generic line.
        self.message = view.change_denied_message
        return bool(view.can_change(obj, team_id))


class TeamScopedViewSet(viewsets.GenericViewSet):  # type: ignore[type-arg]
    permission_classes = [TeamRolePermission]
    write_role = WRITE
    team_lookup = "team_id"

    def can_write_team(self, team_id: int) -> bool:
        check = can_administer if self.write_role == ADMIN else can_write
        return check(self.request.user, team_id)

    def can_change(self, obj: Any, team_id: int) -> bool:
        return self.can_write_team(team_id)

    @property
    def change_denied_message(self) -> str:
        needed = "owner or admin" if self.write_role == ADMIN else "owner, admin or developer"
        return f"changing this needs the {needed} role in its team"

    def authorize_create(self, team: Team) -> None:
        if not self.can_write_team(team.pk):
            needed = "owner or admin" if self.write_role == ADMIN else "owner, admin or developer"
            raise exceptions.PermissionDenied(f"this needs the {needed} role in team {team.slug!r}")

    def input(self, serializer_class: type[serializers.Serializer], **kwargs: Any) -> dict[str, Any]:  # type: ignore[type-arg]
        """Validates the request body with `serializer_class`; 400 with field errors otherwise."""
        serializer = serializer_class(data=self.request.data, context=self.get_serializer_context(), **kwargs)
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)


@extend_schema_field(OpenApiTypes.INT)
class ScopedRelatedField(serializers.PrimaryKeyRelatedField):  # type: ignore[type-arg]
    """A primary key that must name an object the caller can see; others read as "does not exist",
    so the reply does not reveal that another team's object is there."""

    def __init__(self, selector: Callable[[Any], QuerySet[Any]], **kwargs: Any) -> None:
        self.selector = selector
        super().__init__(**kwargs)

    def get_queryset(self) -> QuerySet[Any]:
        request = self.context.get("request")
        return self.selector(request.user if request else None)

    def use_pk_only_optimization(self) -> bool:
        return True


class TeamField(ScopedRelatedField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(visible_teams, **kwargs)


# Input serializer that refuses unknown fields, so a typo ("wieght") is a 400, not silently
# ignored. Subclasses with a `team` field get the caller's only team when it is omitted.
# (A comment, not a docstring: drf-spectacular would copy a docstring into every input schema.)
class StrictInput(serializers.Serializer):  # type: ignore[type-arg]
    def to_internal_value(self, data: Any) -> dict[str, Any]:
        # Checked here rather than in validate() so nested inputs (list items) are strict too.
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["unknown field"] for name in unknown})
        return dict(super().to_internal_value(data))

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "team" in self.fields and "team" not in attrs and not self.partial:
            attrs["team"] = self._only_team()
        return attrs

    def _only_team(self) -> Team:
        request = self.context["request"]
        teams = list(visible_teams(request.user)[:2])
        if not teams:
            raise serializers.ValidationError({"team": "you are not a member of any team"})
        if len(teams) > 1:
            raise serializers.ValidationError({"team": "you are in several teams; give the team id"})
        return teams[0]
