"""Prints a fresh inference key for the demo endpoint that `register_engine` created."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from controlplane.models import Endpoint, KeyScope
from controlplane.services.audit import Actor
from controlplane.services.keys import api_key_create


class Command(BaseCommand):
    help = "Create an inference API key for the demo endpoint and print it (shown once)."

    def handle(self, *args: Any, **options: Any) -> None:
        endpoint = Endpoint.objects.select_related("team").filter(team__slug="demo", name="demo").first()
        if endpoint is None:
            raise CommandError("no demo endpoint yet: start `make run` (it runs register_engine) first")
        name = f"demo key {timezone.now():%Y-%m-%d %H:%M:%S.%f}"
        _, secret = api_key_create(
            team=endpoint.team,
            name=name,
            scopes=[KeyScope.INFERENCE],
            endpoints=[endpoint],
            actor=Actor.system("demo_key"),
        )
        self.stdout.write(secret)
