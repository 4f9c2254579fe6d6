"""List endpoints cost the same number of queries for 2 rows as for 6 (no N+1), and the OpenAPI
document for the control-plane API generates without warnings."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane.services.audit import Actor
from controlplane.services.endpoints import TrafficEntry, endpoint_set_fallbacks, endpoint_set_traffic
from controlplane.services.keys import api_key_create
from tests.factories import (
    BackendFactory,
    BackendReplicaFactory,
    BudgetFactory,
    EndpointFactory,
    MembershipFactory,
    ModelVersionFactory,
    ReleaseFactory,
    TeamFactory,
)

SYSTEM = Actor.system("test")


def add_rows(team, owner, n: int, tag: str) -> None:
    release = ReleaseFactory(team=team)
    for i in range(n):
        backend = BackendFactory(team=team, name=f"b-{tag}-{i}")
        BackendReplicaFactory(backend=backend)
        ModelVersionFactory(team=team, backend=backend, name=f"m-{tag}-{i}")
        endpoint = EndpointFactory(team=team, name=f"e-{tag}-{i}")
        endpoint_set_traffic(endpoint=endpoint, traffic=[TrafficEntry(release, 100)], actor=SYSTEM)
        endpoint_set_fallbacks(endpoint=endpoint, releases=[release], actor=SYSTEM)
        api_key_create(
            team=team, name=f"k-{tag}-{i}", scopes=["inference"], endpoints=[endpoint], actor=SYSTEM
        )
        BudgetFactory(team=team, name=f"budget-{tag}-{i}")
        ReleaseFactory(team=team, model_version=release.model_version, name=f"r-{tag}-{i}")
        extra = TeamFactory()
        MembershipFactory(team=extra, user=owner, role="viewer")


def count_queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    ["teams", "memberships", "api-keys", "backends", "model-versions", "releases", "endpoints", "budgets"],
)
def test_list_query_count_does_not_grow_with_rows(owner_client, owner, team, url):
    add_rows(team, owner, 2, "a")
    few = count_queries(owner_client, f"/api/{url}/")
    add_rows(team, owner, 4, "b")
    many = count_queries(owner_client, f"/api/{url}/")
    assert many == few, f"/api/{url}/ grew from {few} to {many} queries"


@pytest.mark.django_db
def test_openapi_document_has_every_control_plane_route_and_no_warnings(capsys):
    from drf_spectacular.drainage import GENERATOR_STATS
    from drf_spectacular.generators import SchemaGenerator

    GENERATOR_STATS.reset()
    schema = SchemaGenerator(urlconf="controlplane.api.urls").get_schema(request=None, public=True)
    paths = set(schema["paths"])
    for expected in [
        "/teams/",
        "/memberships/{id}/",
        "/api-keys/{id}/rotate/",
        "/api-keys/{id}/revoke/",
        "/backends/{id}/test-connection/",
        "/model-versions/",
        "/releases/{id}/",
        "/endpoints/{id}/traffic/",
        "/endpoints/{id}/rollback/",
        "/endpoints/{id}/fallbacks/",
        "/budgets/{id}/",
    ]:
        assert expected in paths, f"{expected} missing from the schema"
    assert (
        "put" not in schema["paths"]["/releases/{id}/"] and "patch" not in schema["paths"]["/releases/{id}/"]
    )
    assert "apiKey" in schema["components"]["securitySchemes"]
    backend_input = schema["components"]["schemas"]["BackendInput"]["properties"]["credentials"]
    assert backend_input.get("writeOnly") is True
    assert "credentials" not in schema["components"]["schemas"]["Backend"]["properties"]
    assert not GENERATOR_STATS._warn_cache and not GENERATOR_STATS._error_cache, capsys.readouterr().err
