"""Creates the first administrator once; later runs leave existing accounts alone."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from controlplane import env


class Command(BaseCommand):
    help = (
        "Create the first superuser from SWITCHBOARD_ADMIN_PASSWORD, "
        "or with a generated password printed once."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        username = env.text("SWITCHBOARD_ADMIN_USER", "admin")
        with transaction.atomic():
            if user_model.objects.filter(is_superuser=True).exists():
                self.stdout.write("admin: an administrator already exists; leaving accounts as they are")
                return
            given = env.text("SWITCHBOARD_ADMIN_PASSWORD", "")
            password = given or secrets.token_urlsafe(18)
            user_model.objects.create_superuser(username=username, email="", password=password)
        if given:
            self.stdout.write(
                f"admin: created user {username!r} with the password from SWITCHBOARD_ADMIN_PASSWORD"
            )
        else:
            self.stdout.write(
                self.style.WARNING(
                    f"admin: created user {username!r} with password {password}  (shown once; store it now)"
                )
            )
