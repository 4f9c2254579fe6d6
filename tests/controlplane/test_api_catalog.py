"""Model versions (pinning, parameters, prices) and immutable releases."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal

import pytest

from controlplane.models import AuditEvent, ModelVersion, Release
from controlplane.services.catalog import folder_content_hash
from tests.factories import PromptVersionFactory

SHA = "0123456789abcdef0123456789abcdef01234567"


def post_model(client, world, **fields):
    payload = {
        "name": "llama@1",
        "backend": world.backend.pk,
        "hf_repo_id": "meta-llama/Llama-3.1-8B",
        **fields,
    }
    return client.post("/api/model-versions/", payload, format="json")


@pytest.mark.django_db
def test_a_full_commit_sha_is_pinned_without_network(owner_client, world):
    response = post_model(
        owner_client,
        world,
        hf_revision=SHA.upper(),
        input_price_per_mtok="0.15",
        output_price_per_mtok="0.6",
        context_window=8192,
        default_parameters={"temperature": 0.7, "max_new_tokens": 256, "stop": ["\n\n"]},
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["hf_revision"] == SHA and body["served_model_name"] == "meta-llama/Llama-3.1-8B"
    model = ModelVersion.objects.get(pk=body["id"])
    assert model.input_price_per_mtok == Decimal("0.15") and model.output_price_per_mtok == Decimal("0.6")


@pytest.mark.django_db
def test_a_branch_name_offline_is_400_telling_the_operator_what_to_pass(owner_client, world, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # this machine has no internet either way; make it certain
    count = ModelVersion.objects.count()
    response = post_model(owner_client, world, hf_revision="main")
    assert response.status_code == 400
    message = response.json()["hf_revision"][0]
    assert "40-character commit sha" in message and "local_path" in message
    assert ModelVersion.objects.count() == count


@pytest.mark.django_db
def test_a_local_folder_is_pinned_by_its_content_hash(owner_client, world, tmp_path):
    (tmp_path / "config.json").write_text('{"hidden_size": 8}')
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "model.safetensors").write_bytes(b"\x00\x01weights")
    response = owner_client.post(
        "/api/model-versions/",
        {"name": "local@1", "backend": world.backend.pk, "local_path": str(tmp_path)},
        format="json",
    )
    assert response.status_code == 201, response.content
    expected = hashlib.sha256()
    for relative, data in sorted(
        [("config.json", b'{"hidden_size": 8}'), ("weights/model.safetensors", b"\x00\x01weights")]
    ):
        expected.update(f"{relative}\0{len(data)}\0".encode() + data)
    assert response.json()["content_hash"] == expected.hexdigest()
    (tmp_path / "config.json").write_text('{"hidden_size": 9}')
    assert folder_content_hash(tmp_path) != expected.hexdigest()  # any byte change changes the pin


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "error_field", "says"),
    [
        ({"hf_revision": SHA, "default_parameters": {"temprature": 0.5}}, "default_parameters", "temprature"),
        ({"hf_revision": SHA, "default_parameters": {"temperature": "hot"}}, "default_parameters", "number"),
        ({"hf_revision": SHA, "default_parameters": {"top_p": 1.5}}, "default_parameters", "top_p"),
        ({"hf_revision": SHA, "default_parameters": {"max_new_tokens": True}}, "default_parameters", "whole"),
        (
            {"hf_revision": SHA, "default_parameters": {"stop": ["a", "b", "c", "d", "e"]}},
            "default_parameters",
            "4",
        ),
        (
            {"hf_revision": SHA, "context_window": 100, "default_parameters": {"max_new_tokens": 200}},
            "default_parameters",
            "context",
        ),
        ({"hf_revision": SHA, "input_price_per_mtok": "-1"}, "input_price_per_mtok", ""),
        ({"hf_revision": SHA, "hf_repo_id": "not a repo!"}, "hf_repo_id", "org/model"),
        ({"hf_revision": SHA, "local_path": "/srv/models/x"}, "hf_repo_id", "not both"),
        ({"hf_repo_id": "", "local_path": "relative/dir"}, "local_path", "absolute"),
        ({"hf_revision": SHA, "name": "tiny@1"}, "name", "already has"),
    ],
)
def test_bad_model_version_input_is_400_with_the_fix_and_no_row(
    owner_client, world, fields, error_field, says
):
    before = (ModelVersion.objects.count(), AuditEvent.objects.count())
    response = post_model(owner_client, world, **fields)
    assert response.status_code == 400, response.content
    assert error_field in response.json() and says in json.dumps(response.json())
    assert (ModelVersion.objects.count(), AuditEvent.objects.count()) == before


@pytest.mark.django_db
def test_a_backend_of_another_team_is_refused(owner_client, world, other_world):
    response = post_model(owner_client, world, hf_revision=SHA, backend=other_world.backend.pk)
    assert response.status_code == 400 and "backend" in response.json()
    moved = owner_client.patch(
        f"/api/model-versions/{world.model_version.pk}/", {"backend": other_world.backend.pk}, format="json"
    )
    assert moved.status_code == 400 and "backend" in moved.json()


@pytest.mark.django_db
def test_a_model_versions_identity_cannot_change(owner_client, world):
    response = owner_client.patch(
        f"/api/model-versions/{world.model_version.pk}/", {"hf_revision": "f" * 40}, format="json"
    )
    assert response.status_code == 400 and "hf_revision" in response.json()
    world.model_version.refresh_from_db()
    assert world.model_version.hf_revision != "f" * 40


@pytest.mark.django_db
def test_price_change_is_audited_with_before_and_after(owner_client, owner, world):
    response = owner_client.patch(
        f"/api/model-versions/{world.model_version.pk}/", {"output_price_per_mtok": "2.25"}, format="json"
    )
    assert response.status_code == 200 and response.json()["output_price_per_mtok"] == "2.250000"
    event = AuditEvent.objects.get(action="model_version.update")
    assert event.diff == {
        "before": {"output_price_per_mtok": "1.500000"},
        "after": {"output_price_per_mtok": "2.250000"},
    }


@pytest.mark.django_db
def test_model_version_used_by_a_release_cannot_be_deleted(owner_client, world):
    response = owner_client.delete(f"/api/model-versions/{world.model_version.pk}/")
    assert response.status_code == 400 and "r1" in response.json()["model_version"][0]


# --- releases --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_release_bundles_model_prompt_defaults_and_slots(owner_client, owner, world):
    prompt_version = PromptVersionFactory(prompt__team=world.team)
    payload = {
        "name": "support-v7",
        "model_version": world.model_version.pk,
        "prompt_version": prompt_version.pk,
        "generation_defaults": {"temperature": 0.2, "max_tokens": 300},
        "retrieval_config": {"index_version": 3, "top_k": 5},
        "guardrail_policy": None,
        "notes": "lower temp",
    }
    response = owner_client.post("/api/releases/", payload, format="json")
    assert response.status_code == 201, response.content
    release = Release.objects.get(pk=response.json()["id"])
    assert (release.prompt_version_id, release.retrieval_config, release.guardrail_policy) == (
        prompt_version.pk,
        {"index_version": 3, "top_k": 5},
        None,
    )
    assert release.created_by_id == owner.pk
    event = AuditEvent.objects.get(action="release.create", target_id=str(release.pk))
    assert event.diff["after"]["model_version_id"] == world.model_version.pk


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "error_field"),
    [
        ({"generation_defaults": {"temperature": -1}}, "generation_defaults"),
        ({"generation_defaults": {"beam_width": 4}}, "generation_defaults"),
        ({"retrieval_config": [1, 2]}, "retrieval_config"),
        ({"name": "r1"}, "name"),
    ],
)
def test_bad_release_input_is_400(owner_client, world, fields, error_field):
    count = Release.objects.count()
    response = owner_client.post(
        "/api/releases/", {"name": "new", "model_version": world.model_version.pk, **fields}, format="json"
    )
    assert response.status_code == 400 and error_field in response.json(), response.content
    assert Release.objects.count() == count


@pytest.mark.django_db
def test_release_referencing_another_teams_objects_is_400(owner_client, world, other_world, team_admin):
    foreign_prompt = PromptVersionFactory(prompt__team=other_world.team)
    invisible = owner_client.post(
        "/api/releases/", {"name": "x", "model_version": other_world.model_version.pk}, format="json"
    )
    assert invisible.status_code == 400 and "model_version" in invisible.json()
    prompt = owner_client.post(
        "/api/releases/",
        {"name": "x", "model_version": world.model_version.pk, "prompt_version": foreign_prompt.pk},
        format="json",
    )
    assert prompt.status_code == 400 and "prompt_version" in prompt.json()


@pytest.mark.django_db
def test_a_user_in_two_teams_cannot_mix_their_objects(owner_client, owner, world, other_world):
    """Both teams are visible to this user, so the service (not the queryset) must refuse the mix."""
    from tests.factories import MembershipFactory

    MembershipFactory(team=other_world.team, user=owner, role="owner")
    response = owner_client.post(
        "/api/releases/",
        {"team": world.team.pk, "name": "mixed", "model_version": other_world.model_version.pk},
        format="json",
    )
    assert response.status_code == 400 and "another team" in response.json()["model_version"][0]
    missing_team = owner_client.post(
        "/api/releases/", {"name": "x", "model_version": world.model_version.pk}, format="json"
    )
    assert missing_team.status_code == 400 and "team id" in missing_team.json()["team"][0]
