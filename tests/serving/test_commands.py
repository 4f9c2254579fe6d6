"""`register_engine` (run by `make run`) and `demo_key`."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from controlplane.crypto import digest_matches, parse_api_key
from controlplane.models import ApiKey, Backend, Endpoint, Team


@pytest.mark.django_db
def test_register_engine_is_idempotent_and_follows_the_engine_address() -> None:
    call_command("register_engine", url="http://127.0.0.1:8081", stdout=StringIO())
    call_command("register_engine", url="http://127.0.0.1:8081", stdout=StringIO())
    call_command("register_engine", url="http://127.0.0.1:9099/", stdout=StringIO())
    team = Team.objects.get(slug="demo")
    assert Endpoint.objects.filter(team=team).count() == 1
    endpoint = Endpoint.objects.get(team=team, name="demo")
    assert [(t.release.name, t.weight) for t in endpoint.traffic.all()] == [("demo-v1", 100)]
    backend = Backend.objects.get(team=team, name="engine")
    assert backend.kind == "engine"
    assert list(backend.replicas.values_list("url", flat=True)) == ["http://127.0.0.1:9099"]
    model = endpoint.traffic.get().release.model_version
    assert (str(model.input_price_per_mtok), str(model.output_price_per_mtok)) == ("0.100000", "0.200000")
    assert model.content_hash  # the local model folder is pinned by its content


@pytest.mark.django_db
def test_demo_key_prints_a_working_inference_key_for_the_demo_endpoint() -> None:
    call_command("register_engine", url="http://127.0.0.1:8081", stdout=StringIO())
    out = StringIO()
    call_command("demo_key", stdout=out)
    secret = out.getvalue().strip()
    key = ApiKey.objects.get(lookup_id=parse_api_key(secret))
    assert digest_matches(secret, key.digest)
    assert key.scopes == ["inference"]
    assert [e.name for e in key.endpoints.all()] == ["demo"]
