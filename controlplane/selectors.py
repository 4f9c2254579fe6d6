"""Reads of the control plane, each scoped to what the caller may see.

Views and admin pages get their querysets here, never from `Model.objects` directly, so an
object of another team cannot leak through a forgotten filter.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery

from controlplane.models import (
    ApiKey,
    Backend,
    Budget,
    Endpoint,
    Membership,
    ModelVersion,
    Release,
    Team,
    TrafficSplit,
)
from controlplane.permissions import visible_teams


def teams_for(user: Any) -> QuerySet[Team]:
    """Visible teams with their member count and the caller's role (`my_role`) in one query."""
    teams = visible_teams(user).annotate(member_count=Count("memberships", distinct=True))
    if getattr(user, "is_authenticated", False) and getattr(user, "pk", None) is not None:
        role = Membership.objects.filter(team=OuterRef("pk"), user_id=user.pk).values("role")[:1]
        teams = teams.annotate(member_role=Subquery(role))
    return teams.order_by("name")


def memberships_for(user: Any) -> QuerySet[Membership]:
    return (
        Membership.objects.filter(team__in=visible_teams(user))
        .select_related("team", "user")
        .order_by("team", "user__username")
    )


def api_keys_for(user: Any) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(team__in=visible_teams(user)).prefetch_related("endpoints")


def backends_for(user: Any) -> QuerySet[Backend]:
    return Backend.objects.filter(team__in=visible_teams(user)).prefetch_related("replicas")


def model_versions_for(user: Any) -> QuerySet[ModelVersion]:
    return ModelVersion.objects.filter(team__in=visible_teams(user)).select_related("backend")


def releases_for(user: Any) -> QuerySet[Release]:
    return Release.objects.filter(team__in=visible_teams(user)).select_related(
        "model_version", "prompt_version"
    )


def endpoints_for(user: Any) -> QuerySet[Endpoint]:
    return Endpoint.objects.filter(team__in=visible_teams(user)).prefetch_related("traffic", "fallbacks")


def budgets_for(user: Any) -> QuerySet[Budget]:
    return Budget.objects.filter(team__in=visible_teams(user))


def prompt_versions_for(user: Any) -> QuerySet[Any]:
    from prompts.models import PromptVersion

    return PromptVersion.objects.filter(prompt__team__in=visible_teams(user)).select_related("prompt")


def endpoint_policy(endpoint: Endpoint) -> list[dict[str, int]]:
    """The traffic policy as stored in `previous_policy`: [{"release": id, "weight": n}], stable order."""
    splits = TrafficSplit.objects.filter(endpoint=endpoint).order_by("release_id")
    return [{"release": split.release_id, "weight": split.weight} for split in splits]


def endpoint_fallback_ids(endpoint: Endpoint) -> list[int]:
    """Release ids in the order tried; uses prefetched rows when the queryset has them."""
    return [f.release_id for f in sorted(endpoint.fallbacks.all(), key=lambda f: f.position)]


def _endpoints_using_releases(release_filter: Q) -> list[int]:
    releases = Release.objects.filter(release_filter).values("pk")
    ids = Endpoint.objects.filter(Q(traffic__release__in=releases) | Q(fallbacks__release__in=releases))
    return sorted(set(ids.values_list("pk", flat=True)))


def endpoint_ids_using_backend(backend_id: int) -> list[int]:
    """Endpoints whose routing changes when this backend changes (cache invalidation targets)."""
    return _endpoints_using_releases(Q(model_version__backend_id=backend_id))


def endpoint_ids_using_model_version(model_version_id: int) -> list[int]:
    return _endpoints_using_releases(Q(model_version_id=model_version_id))
