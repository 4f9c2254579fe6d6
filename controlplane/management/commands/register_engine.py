"""Registers the embedded engine started by `make run` as the backend of a ready-to-call endpoint.

Idempotent: a second run finds the demo team, backend, model version, release and endpoint and
only points the backend at the engine's current address (the port can change between runs).
Every write goes through the control-plane services, so each is audited.
"""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from controlplane.models import Backend, Endpoint, ModelVersion, Release, Team
from controlplane.services.audit import Actor
from controlplane.services.backends import ReplicaSpec, backend_create, backend_update
from controlplane.services.catalog import model_version_create
from controlplane.services.endpoints import TrafficEntry, endpoint_create
from controlplane.services.releases import release_create
from controlplane.services.teams import team_create

DEMO = {"team": "demo", "backend": "engine", "model": "demo-model", "release": "demo-v1", "endpoint": "demo"}
PRICE_IN_PER_MTOK = Decimal("0.10")
PRICE_OUT_PER_MTOK = Decimal("0.20")


class Command(BaseCommand):
    help = "Register the embedded engine (SWITCHBOARD_ENGINE_URL) as a backend with a demo endpoint."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--url",
            default=os.environ.get("SWITCHBOARD_ENGINE_URL", ""),
            help="the engine's base URL (default: $SWITCHBOARD_ENGINE_URL)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        url = options["url"].rstrip("/")
        if not url:
            raise CommandError(
                "give the engine's address: --url http://127.0.0.1:8081 or SWITCHBOARD_ENGINE_URL"
            )
        actor = Actor.system("register_engine")
        team = Team.objects.filter(slug=DEMO["team"]).first() or team_create(
            name=DEMO["team"], slug=DEMO["team"], actor=actor
        )
        backend = self._backend(team, url, actor)
        model = ModelVersion.objects.filter(team=team, name=DEMO["model"]).first() or self._model(
            team, backend, actor
        )
        release = Release.objects.filter(team=team, name=DEMO["release"]).first() or release_create(
            team=team,
            name=DEMO["release"],
            model_version=model,
            actor=actor,
            generation_defaults={"max_tokens": 64},
            notes="The embedded demo model (random weights).",
        )
        if not Endpoint.objects.filter(team=team, name=DEMO["endpoint"]).exists():
            endpoint_create(
                team=team,
                name=DEMO["endpoint"],
                actor=actor,
                traffic=[TrafficEntry(release, 100)],
                description="The embedded engine's demo model; `manage.py demo_key` prints a key.",
            )
        self.stdout.write(f"engine: endpoint '{DEMO['endpoint']}' of team '{team.slug}' serves {url}")

    @staticmethod
    def _backend(team: Team, url: str, actor: Actor) -> Backend:
        backend = Backend.objects.filter(team=team, name=DEMO["backend"]).first()
        if backend is None:
            return backend_create(
                team=team,
                name=DEMO["backend"],
                kind="engine",
                actor=actor,
                replicas=[ReplicaSpec(url=url)],
                settings={"max_concurrency": 128},
            )
        if [r.url.rstrip("/") for r in backend.replicas.all()] != [url]:
            backend = backend_update(backend=backend, actor=actor, replicas=[ReplicaSpec(url=url)])
        return backend

    @staticmethod
    def _model(team: Team, backend: Backend, actor: Actor) -> ModelVersion:
        from serving.engine.default_model import DEMO_MODEL_ID, ensure_default_model

        folder = ensure_default_model()  # the engine loads this same folder; pin it by content hash
        return model_version_create(
            team=team,
            name=DEMO["model"],
            backend=backend,
            actor=actor,
            local_path=str(folder.resolve()),
            served_model_name=DEMO_MODEL_ID,
            context_window=2048,
            input_price_per_mtok=PRICE_IN_PER_MTOK,
            output_price_per_mtok=PRICE_OUT_PER_MTOK,
        )
