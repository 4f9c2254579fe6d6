"""manage.py audit_verify: checks the audit chain and its signed digests; exits 1 when anything is broken."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from controlplane.audit.verify import VerifyReport, audit_verify


class Command(BaseCommand):
    help = "Verify the hash chain of the audit log and its signed hourly digests."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--chunk-size", type=int, default=5000, help="rows fetched per round trip")
        parser.add_argument("--quiet", action="store_true", help="print only problems")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["chunk_size"] < 1:
            raise CommandError("--chunk-size must be a positive integer")
        progress = None if options["quiet"] else self._progress
        report = audit_verify(chunk_size=options["chunk_size"], progress=progress)
        self._print(report, quiet=options["quiet"])
        if not report.ok:
            raise CommandError("audit log verification FAILED", returncode=1)

    def _progress(self, checked: int) -> None:
        self.stderr.write(f"  ... {checked} events checked")

    def _print(self, report: VerifyReport, *, quiet: bool) -> None:
        first = report.first_break
        if first is not None:
            self.stdout.write(f"FIRST BROKEN LINK: event #{first.event_id}: {first.kind}: {first.detail}")
            for extra in report.chain_breaks[1:]:
                self.stdout.write(f"  also: event #{extra.event_id}: {extra.kind}: {extra.detail}")
            if report.break_count > len(report.chain_breaks):
                self.stdout.write(f"  ... {report.break_count} broken links in all")
        for problem in report.digest_problems:
            self.stdout.write(
                f"DIGEST PROBLEM: digest #{problem.digest_id} ({problem.period_end}): "
                f"{problem.kind}: {problem.detail}"
            )
        if report.ok and not quiet:
            self.stdout.write(
                self.style.SUCCESS(
                    f"OK: {report.events_checked} events chained, {report.digests_checked} digests valid, "
                    f"{report.events_after_last_digest} events in the open period"
                )
            )
