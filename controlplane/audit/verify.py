"""audit_verify: walks the chain row by row and the digests period by period.

The walk streams over a server-side cursor (`iterator(chunk_size=...)`), holding one chunk of rows
and a handful of hashes whatever the size of the log. It tells the two kinds of damage apart:
`row_hash_mismatch` — the row's content no longer matches its own hash (a row was edited);
`prev_hash_mismatch` — the row does not link to the row before it (a row was deleted or inserted).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field

from controlplane.audit.digest import PeriodSummary, sign, summarise_period
from controlplane.models import AuditDigest, AuditEvent
from controlplane.services.audit import GENESIS_HASH, canonical_payload, chain_hash

# Enough to show an operator where damage is; the walk itself goes on counting, holding no more.
MAX_REPORTED = 20


@dataclass(frozen=True)
class ChainBreak:
    event_id: int
    kind: str  # row_hash_mismatch | prev_hash_mismatch
    detail: str


@dataclass(frozen=True)
class DigestProblem:
    digest_id: int
    period_end: str
    kind: str  # digest_chain_broken | signature_invalid | events_changed
    detail: str


@dataclass
class VerifyReport:
    events_checked: int = 0
    digests_checked: int = 0
    break_count: int = 0
    chain_breaks: list[ChainBreak] = field(default_factory=list)
    digest_problems: list[DigestProblem] = field(default_factory=list)
    events_after_last_digest: int = 0

    @property
    def ok(self) -> bool:
        return self.break_count == 0 and not self.digest_problems

    @property
    def first_break(self) -> ChainBreak | None:
        return self.chain_breaks[0] if self.chain_breaks else None


def _link_break(event: AuditEvent, previous_id: int | None) -> ChainBreak:
    linked = AuditEvent.objects.filter(row_hash=event.prev_hash).values_list("id", flat=True).first()
    before = f"#{previous_id}" if previous_id is not None else "the start of the log"
    if linked is None:
        detail = (
            f"event #{event.pk} links to a row that is not in the log (expected {before}): "
            "a row before it was deleted, or edited and re-hashed"
        )
    else:
        detail = (
            f"event #{event.pk} links to #{linked}, not to {before}: "
            f"the row(s) after #{linked} and before #{event.pk} were inserted or moved"
        )
    return ChainBreak(event.pk, "prev_hash_mismatch", detail)


def _check_event(event: AuditEvent, expected_prev: str, previous_id: int | None) -> ChainBreak | None:
    if chain_hash(event.prev_hash, canonical_payload(event)) != event.row_hash:
        return ChainBreak(
            event.pk,
            "row_hash_mismatch",
            f"event #{event.pk} ({event.action}) was edited: its content no longer matches its row_hash",
        )
    if event.prev_hash != expected_prev:
        return _link_break(event, previous_id)
    return None


def verify_chain(
    report: VerifyReport, *, chunk_size: int = 5000, progress: Callable[[int], None] | None = None
) -> None:
    expected_prev, previous_id = GENESIS_HASH, None
    for event in AuditEvent.objects.order_by("id").iterator(chunk_size=chunk_size):
        problem = _check_event(event, expected_prev, previous_id)
        if problem is not None:
            report.break_count += 1
            if len(report.chain_breaks) < MAX_REPORTED:
                report.chain_breaks.append(problem)
        # Carry on from the row as stored, so one damaged row is reported once, not for every row after it.
        expected_prev, previous_id = event.row_hash, event.pk
        report.events_checked += 1
        if progress is not None and report.events_checked % 100_000 == 0:
            progress(report.events_checked)


def _stored_summary(digest: AuditDigest) -> PeriodSummary:
    return PeriodSummary(
        digest.period_start,
        digest.period_end,
        digest.first_event_id,
        digest.last_event_id,
        digest.event_count,
        digest.head_hash,
    )


def _check_digest(digest: AuditDigest, previous: AuditDigest | None) -> list[DigestProblem]:
    problems: list[DigestProblem] = []

    def problem(kind: str, detail: str) -> None:
        problems.append(DigestProblem(digest.pk, digest.period_end.isoformat(), kind, detail))

    expected_signature = previous.signature if previous else ""
    if digest.previous_signature != expected_signature or (
        previous and digest.period_start != previous.period_end
    ):
        problem(
            "digest_chain_broken",
            f"digest #{digest.pk} does not follow "
            f"{'digest #' + str(previous.pk) if previous else 'the start'}: a digest was deleted or replaced",
        )
    stored = _stored_summary(digest)
    if not hmac.compare_digest(sign(stored, digest.previous_signature), digest.signature):
        problem(
            "signature_invalid",
            f"digest #{digest.pk}: signature does not match its contents "
            "(the digest was edited, or signed with another key)",
        )
    actual = summarise_period(digest.period_start, digest.period_end)
    if actual != stored:
        problem(
            "events_changed",
            f"period {digest.period_start.isoformat()} to {digest.period_end.isoformat()}: "
            f"digest signed {stored.event_count} events (#{stored.first_event_id}..#{stored.last_event_id}, "
            f"head {stored.head_hash[:12]}), the log now has {actual.event_count} "
            f"(#{actual.first_event_id}..#{actual.last_event_id}, head {actual.head_hash[:12]})",
        )
    return problems


def verify_digests(report: VerifyReport) -> None:
    previous: AuditDigest | None = None
    for digest in AuditDigest.objects.order_by("period_end").iterator(chunk_size=500):
        for problem in _check_digest(digest, previous):
            if len(report.digest_problems) < MAX_REPORTED:
                report.digest_problems.append(problem)
        report.digests_checked += 1
        previous = digest
    later = AuditEvent.objects.all()
    if previous is not None:
        later = later.filter(occurred_at__gte=previous.period_end)
    report.events_after_last_digest = later.count()


def audit_verify(*, chunk_size: int = 5000, progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Checks every row's hash and link, then every digest's signature, link and period contents."""
    report = VerifyReport()
    verify_chain(report, chunk_size=chunk_size, progress=progress)
    verify_digests(report)
    return report
