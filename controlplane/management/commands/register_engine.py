"""Registers the embedded engine started by `make run` as a backend (once the domain exists)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Register the embedded engine (SWITCHBOARD_ENGINE_URL) as a backend with a demo endpoint."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write("engine: registration arrives with the control-plane domain")
