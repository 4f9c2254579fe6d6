"""Concurrent label moves and version creation, each in its own thread and database connection."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from controlplane.models import AuditEvent
from controlplane.services.audit import Actor
from prompts.models import PromptLabel, PromptVersion
from prompts.services import prompt_create, prompt_label_move, prompt_version_create

WORKERS = 8


def _race(work: Callable[[int], Any]) -> tuple[list[Any], list[BaseException]]:
    """Runs work(i) in WORKERS threads released together; each thread uses and closes its own connection."""
    barrier = threading.Barrier(WORKERS)
    results: list[Any] = []
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results.append(work(i))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results, errors


@pytest.mark.django_db(transaction=True)
def test_concurrent_label_moves_leave_one_pointer_and_one_audit_row_per_move(team: Any) -> None:
    actor = Actor.system("race")
    prompt = prompt_create(team=team, name="raced", actor=actor)
    versions = [
        prompt_version_create(prompt=prompt, template=f"v{i} {{{{ x }}}}", actor=actor)
        for i in range(WORKERS)
    ]
    # The label does not exist yet: the first mover creates it, the others move it.
    _, errors = _race(
        lambda i: prompt_label_move(
            prompt=prompt,
            label="production",
            version=versions[i],
            actor=Actor(type="system", label=f"mover-{i}"),
        )
    )
    assert errors == []
    labels = list(PromptLabel.objects.filter(prompt=prompt, name="production"))
    assert len(labels) == 1
    moves = list(AuditEvent.objects.filter(action="prompt_label.move").order_by("id"))
    assert len(moves) == WORKERS
    assert moves[0].diff["before"] is None
    # Each move starts where the previous one left the label: none was lost or applied twice.
    for earlier, later in itertools.pairwise(moves):
        assert later.diff["before"]["version"] == earlier.diff["after"]["version"]
    assert labels[0].version.version == moves[-1].diff["after"]["version"]
    assert sorted(m.diff["after"]["version"] for m in moves) == list(range(1, WORKERS + 1))


@pytest.mark.django_db(transaction=True)
def test_concurrent_version_creation_numbers_versions_without_gaps_or_duplicates(team: Any) -> None:
    actor = Actor.system("race")
    prompt = prompt_create(team=team, name="numbered", actor=actor)
    results, errors = _race(
        lambda i: prompt_version_create(prompt=prompt, template=f"t{i}", actor=actor).version
    )
    assert errors == []
    assert sorted(results) == list(range(1, WORKERS + 1))
    assert sorted(PromptVersion.objects.filter(prompt=prompt).values_list("version", flat=True)) == sorted(
        results
    )
    assert AuditEvent.objects.filter(action="prompt_version.create").count() == WORKERS
