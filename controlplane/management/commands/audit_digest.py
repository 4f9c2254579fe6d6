"""manage.py audit_digest: closes every finished hour of the audit log with a signed digest now
(the beat schedule runs the same service hourly; running it twice writes nothing the second time)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from controlplane.audit.digest import audit_digests_close


class Command(BaseCommand):
    help = "Write signed digests for every whole hour of the audit log not yet closed."

    def handle(self, *args: Any, **options: Any) -> None:
        created = audit_digests_close()
        for digest in created:
            self.stdout.write(
                f"closed {digest.period_start.isoformat()}  to  {digest.period_end.isoformat()}: "
                f"{digest.event_count} events, head {digest.head_hash[:12]}"
            )
        self.stdout.write(f"{len(created)} digest(s) written")
