"""factory_boy factories for the domain. Each builds a valid row of one team; pass `team=` to share one."""

from __future__ import annotations

from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from controlplane.models import (
    Backend,
    BackendKind,
    BackendReplica,
    Budget,
    BudgetPeriod,
    BudgetScope,
    Endpoint,
    Membership,
    ModelVersion,
    Release,
    Role,
    Team,
)
from prompts.models import Prompt, PromptVersion


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.test")
    is_staff = True


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Team

    name = factory.Sequence(lambda n: f"Team {n}")
    slug = factory.Sequence(lambda n: f"team-{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    team = factory.SubFactory(TeamFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.DEVELOPER


class BackendFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Backend

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"backend-{n}")
    kind = BackendKind.TGI


class BackendReplicaFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = BackendReplica

    backend = factory.SubFactory(BackendFactory)
    url = factory.Sequence(lambda n: f"http://127.0.0.1:{9000 + n}")


class ModelVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelVersion

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"model-{n}")
    hf_repo_id = "switchboard/tiny"
    hf_revision = "0123456789abcdef0123456789abcdef01234567"
    context_window = 2048
    input_price_per_mtok = Decimal("0.50")
    output_price_per_mtok = Decimal("1.50")
    backend = factory.SubFactory(BackendFactory, team=factory.SelfAttribute("..team"))


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"prompt-{n}")


class PromptVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PromptVersion

    prompt = factory.SubFactory(PromptFactory)
    version = factory.Sequence(lambda n: n + 1)
    template = "Answer briefly: {{ question }}"


class ReleaseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Release

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"release-{n}")
    model_version = factory.SubFactory(ModelVersionFactory, team=factory.SelfAttribute("..team"))


class EndpointFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Endpoint

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"endpoint-{n}")


class BudgetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Budget

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"budget-{n}")
    scope = BudgetScope.TEAM
    period = BudgetPeriod.DAY
    limit_usd = Decimal("10.00")
    period_start = factory.LazyFunction(
        lambda: timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    )
