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


MAX_INT32 = 2_147_483_647  # PostgreSQL integer: larger values would fail in the database, as a 500


def require_name(name: str, *, field: str = "name", max_length: int = 100) -> str:
    """Names are what people search and audit logs show: non-blank and within the column."""
    clean = name.strip()
    if not clean:
        raise ValidationError({field: "give a name"})
    if len(clean) > max_length:
        raise ValidationError({field: f"at most {max_length} characters"})
    return clean


def require_limit(value: int | None, field: str) -> int | None:
    """A positive whole number that fits the column, or None for "no limit"."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INT32:
        raise ValidationError({field: f"must be a whole number from 1 to {MAX_INT32}, or empty for no limit"})
    return value
