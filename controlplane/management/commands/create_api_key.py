"""`manage.py create_api_key`: issue a key from the shell; the secret is printed once."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from controlplane.models import Endpoint, KeyScope, Team
from controlplane.services.audit import Actor
from controlplane.services.keys import api_key_create

_DURATION = re.compile(r"^(\d+)([smhdw]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """'90d', '12h', '30m', '3600' (seconds) -> timedelta."""
    match = _DURATION.match(text.strip().lower())
    if not match or int(match.group(1)) == 0:
        raise CommandError(f"--expires-in {text!r}: give a positive number with s, m, h, d or w (e.g. 90d)")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


class Command(BaseCommand):
    help = "Create an API key and print its secret (shown once; only a digest is stored)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--team", required=True, help="team slug or id")
        parser.add_argument("--name", required=True)
        parser.add_argument(
            "--scope",
            action="append",
            dest="scopes",
            default=[],
            metavar="SCOPE",
            help=f"repeatable; one of {', '.join(KeyScope.values)} (default: inference)",
        )
        parser.add_argument(
            "--endpoint",
            action="append",
            dest="endpoints",
            default=[],
            metavar="NAME",
            help="repeatable; restrict the key to these endpoints (default: all)",
        )
        parser.add_argument("--expires-in", help="e.g. 90d, 12h, 30m; default: never")
        parser.add_argument("--rpm", type=int, help="requests per minute")
        parser.add_argument("--tpm", type=int, help="tokens per minute")
        parser.add_argument("--concurrency", type=int, help="concurrent requests")

    def handle(self, *args: Any, **options: Any) -> None:
        team = self._team(options["team"])
        endpoints = self._endpoints(team, options["endpoints"])
        for flag in ("rpm", "tpm", "concurrency"):
            if options[flag] is not None and options[flag] < 1:
                raise CommandError(f"--{flag} must be 1 or more (leave it out for no limit)")
        expires_at = timezone.now() + parse_duration(options["expires_in"]) if options["expires_in"] else None
        try:
            key, secret = api_key_create(
                team=team,
                name=options["name"],
                scopes=options["scopes"] or [KeyScope.INFERENCE],
                endpoints=endpoints,
                expires_at=expires_at,
                rpm_limit=options["rpm"],
                tpm_limit=options["tpm"],
                concurrency_limit=options["concurrency"],
                actor=Actor.system("manage.py create_api_key"),
            )
        except ValidationError as exc:
            raise CommandError(
                "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
            ) from None
        self.stderr.write(
            f"created key {key.name!r} ({key.display_prefix}) in team {team.slug}; "
            "the secret below is shown once:"
        )
        self.stdout.write(secret)

    def _team(self, ref: str) -> Team:
        team = (
            Team.objects.filter(pk=int(ref)).first()
            if ref.isdigit()
            else Team.objects.filter(slug=ref).first()
        )
        if team is None:
            raise CommandError(f"no team {ref!r}; give a team slug or id")
        return team

    def _endpoints(self, team: Team, names: list[str]) -> list[Endpoint]:
        found = {e.name: e for e in Endpoint.objects.filter(team=team, name__in=names)}
        missing = sorted(set(names) - set(found))
        if missing:
            raise CommandError(f"team {team.slug} has no endpoint(s) {missing}")
        return list(found.values())
