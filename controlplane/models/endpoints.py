from __future__ import annotations

from django.db import models

from controlplane.models.releases import Release
from controlplane.models.teams import Team


class Endpoint(models.Model):
    """The stable name clients call (`model` in OpenAI terms). Its policy says which releases serve."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="endpoints")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True, default="")
    # Bumped on every change to the policy; gateway caches compare it to know they are current.
    config_version = models.PositiveIntegerField(default=1)
    # The policy before the last switch, kept so roll back is one call: [{"release": id, "weight": n}].
    previous_policy = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["team", "name"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="endpoint_unique_team_name")]

    def __str__(self) -> str:
        return self.name


class TrafficSplit(models.Model):
    """One release's integer share of an endpoint's traffic; an endpoint's weights sum to 100."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="traffic")
    release = models.ForeignKey(Release, on_delete=models.PROTECT, related_name="traffic")
    weight = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["endpoint", "-weight", "release_id"]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "release"], name="traffic_unique_endpoint_release"),
            models.CheckConstraint(
                condition=models.Q(weight__gte=0, weight__lte=100), name="traffic_weight_0_100"
            ),
        ]

    def __str__(self) -> str:
        return f"release {self.release_id}: {self.weight}%"


class EndpointFallback(models.Model):
    """Ordered releases tried when the chosen release's backends fail before the first token."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="fallbacks")
    release = models.ForeignKey(Release, on_delete=models.PROTECT, related_name="fallback_for")
    position = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["endpoint", "position"]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "position"], name="fallback_unique_position"),
            models.UniqueConstraint(fields=["endpoint", "release"], name="fallback_unique_release"),
        ]

    def __str__(self) -> str:
        return f"#{self.position}: release {self.release_id}"
