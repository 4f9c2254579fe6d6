"""Management REST API routes; each app registers its viewsets here."""

from rest_framework.routers import DefaultRouter

from controlplane.api import schema  # noqa: F401  (registers the API key auth scheme for OpenAPI)
from controlplane.api.backends import BackendViewSet
from controlplane.api.budgets import BudgetViewSet
from controlplane.api.catalog import ModelVersionViewSet, ReleaseViewSet
from controlplane.api.endpoints import EndpointViewSet
from controlplane.api.keys import ApiKeyViewSet
from controlplane.api.teams import MembershipViewSet, TeamViewSet

router = DefaultRouter()
router.register("teams", TeamViewSet, basename="team")
router.register("memberships", MembershipViewSet, basename="membership")
router.register("api-keys", ApiKeyViewSet, basename="api-key")
router.register("backends", BackendViewSet, basename="backend")
router.register("model-versions", ModelVersionViewSet, basename="model-version")
router.register("releases", ReleaseViewSet, basename="release")
router.register("endpoints", EndpointViewSet, basename="endpoint")
router.register("budgets", BudgetViewSet, basename="budget")

urlpatterns = router.urls
