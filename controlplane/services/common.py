"""Helpers every control-plane service shares: turning constraint violations into field errors,
and refusing references that cross the tenant boundary."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction


@contextmanager
def unique_as_field_error(constraints: Mapping[str, tuple[str, str]]) -> Iterator[None]:
    """Runs the block in a savepoint; a violation of a named constraint becomes a field error.

    A pre-check ("does the name exist?") races with a concurrent insert; the constraint does
    not, so it is the source of truth and this turns its error into a 400 instead of a 500.
    `constraints` maps a constraint name to (field, message).
    """
    try:
        with transaction.atomic():
            yield
    except IntegrityError as exc:
        name = getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None)
        if isinstance(name, str) and name in constraints:
            field, message = constraints[name]
            raise ValidationError({field: message}) from None
        raise


def require_team(obj: object, team_id: int, field: str, what: str) -> None:
    """Refuses a reference to another team's object (the API only offers visible ones, but a
    user in two teams could still mix them up)."""
    if obj is not None and getattr(obj, "team_id", None) != team_id:
        raise ValidationError({field: f"this {what} belongs to another team; choose one of this team's"})
