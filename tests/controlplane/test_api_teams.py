"""Teams and membership: who may create teams, add and change members, and the last-owner rule."""

from __future__ import annotations

import pytest

from controlplane.models import AuditEvent, Membership, Role, Team
from tests.factories import UserFactory


@pytest.mark.django_db
def test_staff_user_creates_a_team_and_becomes_its_owner(owner_client, owner):
    response = owner_client.post("/api/teams/", {"name": "Research Lab"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["slug"] == "research-lab" and response.json()["my_role"] == "owner"
    team = Team.objects.get(pk=response.json()["id"])
    assert Membership.objects.get(team=team, user=owner).role == Role.OWNER
    assert list(AuditEvent.objects.filter(team_id=team.pk).values_list("action", flat=True)) == [
        "team.create",
        "membership.add",
    ]


@pytest.mark.django_db
def test_non_staff_users_cannot_create_teams(team):
    from rest_framework.test import APIClient

    plain = UserFactory(username="plain", is_staff=False)
    client = APIClient()
    client.force_login(plain)
    response = client.post("/api/teams/", {"name": "Mine"}, format="json")
    assert response.status_code == 403 and not Team.objects.filter(name="Mine").exists()


@pytest.mark.django_db
def test_duplicate_team_name_is_400(owner_client, team):
    response = owner_client.post("/api/teams/", {"name": "Acme", "slug": "acme-2"}, format="json")
    assert response.status_code == 400 and "already exists" in response.json()["name"][0]


@pytest.mark.django_db
def test_member_list_shows_roles_and_my_role(viewer_client, world, owner, member, viewer):
    members = viewer_client.get("/api/memberships/", {"team": world.team.pk}).json()["results"]
    assert {(m["username"], m["role"]) for m in members} == {
        (owner.username, "owner"),
        (member.username, "developer"),
        (viewer.username, "viewer"),
    }
    assert viewer_client.get(f"/api/teams/{world.team.pk}/").json()["my_role"] == "viewer"


@pytest.mark.django_db
def test_admin_adds_members_but_only_an_owner_grants_owner(team_admin_client, owner_client, world, newcomer):
    denied = team_admin_client.post(
        "/api/memberships/", {"username": newcomer.username, "role": "owner"}, format="json"
    )
    assert denied.status_code == 403 and "owner" in denied.json()["detail"]
    added = team_admin_client.post(
        "/api/memberships/", {"username": newcomer.username, "role": "developer"}, format="json"
    )
    assert added.status_code == 201
    promote = team_admin_client.patch(
        f"/api/memberships/{added.json()['id']}/", {"role": "owner"}, format="json"
    )
    assert promote.status_code == 403
    assert (
        owner_client.patch(
            f"/api/memberships/{added.json()['id']}/", {"role": "owner"}, format="json"
        ).status_code
        == 200
    )


@pytest.mark.django_db
def test_adding_an_existing_member_or_unknown_user_is_400(owner_client, world, member):
    again = owner_client.post(
        "/api/memberships/", {"username": member.username, "role": "viewer"}, format="json"
    )
    assert again.status_code == 400 and "already a member" in again.json()["user"][0]
    ghost = owner_client.post("/api/memberships/", {"username": "ghost", "role": "viewer"}, format="json")
    assert ghost.status_code == 400 and "username" in ghost.json()
    bad_role = owner_client.post(
        "/api/memberships/", {"username": "nina-newcomer", "role": "god"}, format="json"
    )
    assert bad_role.status_code == 400 and "role" in bad_role.json()


@pytest.mark.django_db
def test_the_last_owner_can_neither_leave_nor_be_demoted(owner_client, owner, world):
    mine = Membership.objects.get(team=world.team, user=owner)
    demote = owner_client.patch(f"/api/memberships/{mine.pk}/", {"role": "admin"}, format="json")
    assert demote.status_code == 400 and "at least one owner" in demote.json()["role"][0]
    leave = owner_client.delete(f"/api/memberships/{mine.pk}/")
    assert leave.status_code == 400
    assert Membership.objects.get(pk=mine.pk).role == Role.OWNER


@pytest.mark.django_db
def test_removed_member_loses_access_at_once(owner_client, member_client, world, member):
    membership = Membership.objects.get(team=world.team, user=member)
    assert member_client.get(f"/api/endpoints/{world.endpoint.pk}/").status_code == 200
    assert owner_client.delete(f"/api/memberships/{membership.pk}/").status_code == 204
    assert member_client.get(f"/api/endpoints/{world.endpoint.pk}/").status_code == 404
    event = AuditEvent.objects.get(action="membership.remove")
    assert event.diff["before"] == {"user_id": member.pk, "role": "developer"}
