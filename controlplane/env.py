"""Reading settings from the environment, failing at start with one line that says what to fix."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import environ


class SettingError(Exception):
    """A variable is missing or malformed; the message names it and what is expected."""


def _raw(name: str) -> str | None:
    """Value of NAME, or the contents of the file NAME_FILE names (for mounted secrets)."""
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text().strip()
        except OSError as exc:
            raise SettingError(f"{name}_FILE: cannot read {file_name!r} ({exc.strerror})") from exc
    return os.environ.get(name)


def text(name: str, default: str | None = None) -> str:
    value = _raw(name)
    if value is None or value == "":
        if default is None:
            raise SettingError(f"{name}: required but not set")
        return default
    return value


def boolean(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise SettingError(f"{name}: expected true or false, got {value!r}")


def integer(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise SettingError(f"{name}: expected an integer, got {value!r}") from None
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise SettingError(f"{name}: expected an integer in [{minimum}, {maximum}], got {number}")
    return number


def choice(name: str, default: str, options: tuple[str, ...]) -> str:
    value = text(name, default)
    if value not in options:
        raise SettingError(f"{name}: expected one of {', '.join(options)}, got {value!r}")
    return value


def str_list(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value is None or value.strip() == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def fernet_keys(name: str) -> list[str]:
    """Comma-separated Fernet keys, newest first; each must be 32 url-safe base64-encoded bytes."""
    from cryptography.fernet import Fernet

    keys = str_list(name, [])
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key.encode())
        except ValueError:
            raise SettingError(
                f"{name}: key #{position} is not a Fernet key (32 url-safe base64-encoded bytes)"
            ) from None
    return keys


def database(name: str, state_file: Path) -> dict[str, Any]:
    url = _raw(name) or _from_running_stack(name, state_file)
    try:
        config = environ.Env.db_url_config(url)
    except Exception as exc:  # django-environ raises several types for a bad scheme
        raise SettingError(f"{name}: expected a URL like postgres://user:pass@host:5432/db ({exc})") from None
    if config.get("ENGINE") != "django.db.backends.postgresql":
        raise SettingError(
            f"{name}: expected a PostgreSQL URL (postgres://...), got scheme of {url.split(':', 1)[0]!r}"
        )
    # A unix-socket directory arrives percent-encoded in the host part of the URL.
    config["HOST"] = unquote(str(config.get("HOST") or ""))
    return config


def redis_url(name: str, state_file: Path) -> str:
    url = _raw(name) or _from_running_stack(name, state_file)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise SettingError(f"{name}: expected a URL like redis://host:6379/0, got {url!r}")
    return url


def _from_running_stack(name: str, state_file: Path) -> str:
    """While `make run` is up, manage.py commands find its addresses without extra setup."""
    try:
        return str(json.loads(state_file.read_text())[name])
    except (OSError, ValueError, KeyError):
        raise SettingError(
            f"{name}: not set and no embedded stack is running; set it, start `make run`, "
            "or wrap the command in `python -m controlplane.stack exec -- ...`"
        ) from None
