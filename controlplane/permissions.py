"""Who may see and change what. Every management view scopes its queryset through here.

A caller is a console user (session) or an API key with a management scope. Users act in the
teams they are members of, with their role there; a key acts only in its own team, as a viewer
(management:read) or developer (management:write). Objects of other teams are invisible: views
return 404 for them, never 403, so their existence does not leak.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.db.models import QuerySet
from django.utils import timezone
from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from controlplane.crypto import digest_matches, parse_api_key
from controlplane.models import ApiKey, KeyScope, Membership, Role, Team
from controlplane.models.teams import ADMIN_ROLES, WRITE_ROLES
from controlplane.services.audit import Actor

SAFE_METHODS = permissions.SAFE_METHODS


class ApiKeyUser(AnonymousUser):
    """Stands in for request.user when a management-scoped API key authenticates."""

    def __init__(self, key: ApiKey) -> None:
        super().__init__()
        self.api_key = key

    @property
    def is_authenticated(self) -> bool:  # type: ignore[override]
        return True

    def __str__(self) -> str:
        return f"api-key:{self.api_key.lookup_id}"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer sb-...` for the management API (keys with a management scope)."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[ApiKeyUser, ApiKey] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header.startswith(f"{self.keyword} sb-"):
            return None
        secret = header[len(self.keyword) + 1 :].strip()
        lookup_id = parse_api_key(secret)
        key = ApiKey.objects.select_related("team").filter(lookup_id=lookup_id).first() if lookup_id else None
        if key is None or not digest_matches(secret, key.digest):
            raise exceptions.AuthenticationFailed("invalid API key")
        if not key.is_active():
            raise exceptions.AuthenticationFailed("API key is revoked or expired")
        if not {KeyScope.MANAGEMENT_READ, KeyScope.MANAGEMENT_WRITE} & set(key.scopes):
            raise exceptions.PermissionDenied("this API key has no management scope")
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now())
        return ApiKeyUser(key), key

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


def _key_role(key: ApiKey) -> Role:
    return Role.DEVELOPER if KeyScope.MANAGEMENT_WRITE in key.scopes else Role.VIEWER


def visible_teams(user: Any) -> QuerySet[Team]:
    if isinstance(user, ApiKeyUser):
        return Team.objects.filter(pk=user.api_key.team_id)
    if getattr(user, "is_superuser", False):
        return Team.objects.all()
    if not getattr(user, "is_authenticated", False):
        return Team.objects.none()
    return Team.objects.filter(memberships__user=user)


def role_in(user: Any, team_id: int) -> Role | None:
    if isinstance(user, ApiKeyUser):
        return _key_role(user.api_key) if user.api_key.team_id == team_id else None
    if getattr(user, "is_superuser", False):
        return Role.OWNER
    if not getattr(user, "is_authenticated", False):
        return None
    role = Membership.objects.filter(team_id=team_id, user=user).values_list("role", flat=True).first()
    return Role(role) if role else None


def can_write(user: Any, team_id: int) -> bool:
    return role_in(user, team_id) in WRITE_ROLES


def can_administer(user: Any, team_id: int) -> bool:
    return role_in(user, team_id) in ADMIN_ROLES


def actor_for(request: Any) -> Actor:
    """The audit actor for an HTTP request (session user or API key), with request id and IP."""
    request_id = getattr(request, "request_id", "") or getattr(
        getattr(request, "_request", None), "request_id", ""
    )
    ip = request.META.get("REMOTE_ADDR") or None
    user = request.user
    if isinstance(user, ApiKeyUser):
        key = user.api_key
        return Actor(type="api_key", id=str(key.pk), label=key.display_prefix, request_id=request_id, ip=ip)
    return Actor.for_user(user, request_id=request_id, ip=ip)


class TeamScoped(permissions.BasePermission):
    """Reads need any role in the object's team; writes need owner, admin or developer.

    Views set `team_lookup` (the path from the object to its team id, default "team_id") and
    filter their querysets with `visible_teams`, so outsiders get 404 before this runs.
    """

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user and request.user.is_authenticated)

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        team_id = team_id_of(obj, getattr(view, "team_lookup", "team_id"))
        if request.method in SAFE_METHODS:
            return role_in(request.user, team_id) is not None
        return can_write(request.user, team_id)


def team_id_of(obj: Any, lookup: str) -> int:
    value: Any = obj
    for part in lookup.split("__"):
        value = getattr(value, part)
    return int(value)
