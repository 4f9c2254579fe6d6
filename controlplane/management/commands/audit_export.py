"""manage.py audit_export: the audit log as JSONL (OCSF) or CSV, filtered, streamed to a file or stdout."""

from __future__ import annotations

import getpass
from contextlib import ExitStack
from typing import Any, BinaryIO

from django.core.management.base import BaseCommand, CommandError, CommandParser

from controlplane.audit.export import FORMATS, ExportStream
from controlplane.audit.query import AuditQuery, AuditQueryError, audit_events
from controlplane.services.audit import Actor, audit_export_record


class Command(BaseCommand):
    help = "Export audit events as JSONL (OCSF API Activity) or CSV. The export itself is audited."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", choices=FORMATS, default="jsonl")
        parser.add_argument("--since", help="ISO 8601 time or date (inclusive)")
        parser.add_argument("--until", help="ISO 8601 time or date (exclusive)")
        parser.add_argument("--actor", help="user:<id>, api_key:<id>, system, or an actor label")
        parser.add_argument("--action", help="exact action, or a prefix ending in * (prompt_label.*)")
        parser.add_argument("--target", help="target type, or type:id")
        parser.add_argument("--team", help="team id")
        parser.add_argument("--output", help="file to write (default: stdout)")
        parser.add_argument("--chunk-size", type=int, default=2000, help="rows fetched per round trip")

    def handle(self, *args: Any, **options: Any) -> None:
        filters = {name: options[name] for name in ("since", "until", "actor", "action", "target", "team")}
        try:
            query = AuditQuery.parse({k: v for k, v in filters.items() if v is not None})
        except AuditQueryError as exc:
            raise CommandError(f"--{exc.field}: {exc.message}") from None
        actor = Actor.system(label=f"manage.py audit_export ({getpass.getuser()})")
        audit_export_record(
            actor=actor,
            fmt=options["format"],
            filters=query.as_dict(),
            team_ids=[query.team_id] if query.team_id is not None else None,
        )
        stream = ExportStream(
            audit_events(query, team_ids=None), options["format"], chunk_size=options["chunk_size"]
        )
        with ExitStack() as stack:
            target = self._open(stack, options["output"])
            for block in stream:
                target(block)
        self.stderr.write(f"exported {stream.rows} events ({options['format']})")

    def _open(self, stack: ExitStack, path: str | None) -> Any:
        if path:
            try:
                handle: BinaryIO = stack.enter_context(open(path, "wb"))  # noqa: SIM115
            except OSError as exc:
                raise CommandError(f"--output: cannot write {path!r} ({exc.strerror})") from None
            return handle.write
        return lambda block: self.stdout.write(block.decode(), ending="")
