"""Settings are parsed from the environment and fail at start with one line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from controlplane import env
from tests.conftest import REPO_ROOT


def test_integer_parses_and_rejects_garbage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SB_TEST_PORT", "8123")
    assert env.integer("SB_TEST_PORT", 1) == 8123
    monkeypatch.setenv("SB_TEST_PORT", "eighty")
    with pytest.raises(env.SettingError, match="SB_TEST_PORT: expected an integer"):
        env.integer("SB_TEST_PORT", 1)
    monkeypatch.setenv("SB_TEST_PORT", "70000")
    with pytest.raises(env.SettingError, match=r"SB_TEST_PORT: expected an integer in \[1, 65535\]"):
        env.integer("SB_TEST_PORT", 1, minimum=1, maximum=65535)


def test_boolean_accepts_common_spellings_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for raw, expected in [("true", True), ("1", True), ("off", False), ("No", False)]:
        monkeypatch.setenv("SB_TEST_FLAG", raw)
        assert env.boolean("SB_TEST_FLAG", not expected) is expected
    monkeypatch.setenv("SB_TEST_FLAG", "maybe")
    with pytest.raises(env.SettingError, match="SB_TEST_FLAG: expected true or false"):
        env.boolean("SB_TEST_FLAG", False)


def test_secret_is_read_from_name_file(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    secret = tmp_path / "secret"  # type: ignore[operator]
    secret.write_text("s3cr3t-from-file\n")
    monkeypatch.setenv("SB_TEST_SECRET_FILE", str(secret))
    assert env.text("SB_TEST_SECRET") == "s3cr3t-from-file"
    monkeypatch.setenv("SB_TEST_SECRET_FILE", str(secret) + ".missing")
    with pytest.raises(env.SettingError, match="SB_TEST_SECRET_FILE: cannot read"):
        env.text("SB_TEST_SECRET")


def test_database_url_must_be_postgres(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SB_TEST_DB", "postgres://u:p@db.internal:6543/switchboard")
    config = env.database("SB_TEST_DB", tmp_path / "none.json")  # type: ignore[operator]
    assert (config["HOST"], config["PORT"], config["NAME"]) == ("db.internal", 6543, "switchboard")
    monkeypatch.setenv("SB_TEST_DB", "mysql://u:p@db/x")
    with pytest.raises(env.SettingError, match="SB_TEST_DB: expected a PostgreSQL URL"):
        env.database("SB_TEST_DB", tmp_path / "none.json")  # type: ignore[operator]


def test_socket_directory_in_database_url_is_decoded(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SB_TEST_DB", "postgres://postgres@%2Ftmp%2Fpg/switchboard")
    assert env.database("SB_TEST_DB", tmp_path / "none.json")["HOST"] == "/tmp/pg"  # type: ignore[operator]


def _check(**overrides: str) -> subprocess.CompletedProcess[str]:
    child_env = {**os.environ, **overrides}
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=REPO_ROOT,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"SWITCHBOARD_PORT": "http"}, "SWITCHBOARD_PORT: expected an integer"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL: expected a URL like redis://"),
        ({"SWITCHBOARD_ENV": "staging"}, "SWITCHBOARD_ENV: expected one of development, production, test"),
        ({"SWITCHBOARD_ENV": "production", "DEBUG": "true"}, "DEBUG: must be off"),
        ({"SWITCHBOARD_ENV": "production", "DEBUG": "false"}, "SECRET_KEY: production needs"),
        (
            {"SWITCHBOARD_ENV": "production", "DEBUG": "false", "SECRET_KEY": "x" * 40, "ALLOWED_HOSTS": ""},
            "ALLOWED_HOSTS: production needs",
        ),
        (
            {
                "SWITCHBOARD_ENV": "production",
                "DEBUG": "false",
                "SECRET_KEY": "x" * 40,
                "ALLOWED_HOSTS": "a.b",
            },
            "SWITCHBOARD_ENCRYPTION_KEYS: production needs",
        ),
        (
            {"SWITCHBOARD_ENCRYPTION_KEYS": "not-a-key"},
            "SWITCHBOARD_ENCRYPTION_KEYS: key #1 is not a Fernet key",
        ),
    ],
)
def test_bad_setting_fails_start_with_one_line(overrides: dict[str, str], message: str) -> None:
    result = _check(**overrides)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if "configuration error" in line]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_production_starts_with_proper_settings() -> None:
    from cryptography.fernet import Fernet

    result = _check(
        SWITCHBOARD_ENV="production",
        DEBUG="false",
        SECRET_KEY="k" * 48,
        ALLOWED_HOSTS="sb.example.com",
        SWITCHBOARD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
    )
    assert result.returncode == 0, result.stderr
