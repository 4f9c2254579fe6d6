"""A refused key change tells the caller who may make it."""

from __future__ import annotations

import pytest

from controlplane.services.audit import Actor
from controlplane.services.keys import api_key_create


@pytest.mark.django_db
def test_management_key_refused_on_rotate_is_told_who_may(team, management_key_client) -> None:  # type: ignore[no-untyped-def]
    target, _ = api_key_create(team=team, name="app", scopes=["inference"], actor=Actor.system())
    response = management_key_client.post(f"/api/api-keys/{target.pk}/rotate/", {}, format="json")
    assert response.status_code == 403
    assert "owners and admins" in response.json()["detail"]
