"""Secrets at rest and API-key digests.

Backend credentials are encrypted with Fernet (the `cryptography` package) under keys from
SWITCHBOARD_ENCRYPTION_KEYS (comma-separated, newest first: MultiFernet decrypts with any and
encrypts with the first, so keys rotate without a migration). Without that variable a key is
derived from SECRET_KEY, which is fine for development and refused in production by settings.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

KEY_PREFIX = "sb-"
_LOOKUP_ALPHABET = "abcdefghijkmnopqrstuvwxyz23456789"  # no look-alikes (l, 1, 0, o)


class CredentialDecryptError(Exception):
    """The stored credential cannot be decrypted with any configured key."""


def _fernet() -> MultiFernet:
    keys = list(settings.SWITCHBOARD_ENCRYPTION_KEYS)
    if not keys:
        derived = hashlib.sha256(f"switchboard-credentials:{settings.SECRET_KEY}".encode()).digest()
        keys = [base64.urlsafe_b64encode(derived).decode()]
    return MultiFernet([Fernet(key.encode()) for key in keys])


def encrypt_credential(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode() if plaintext else ""


def decrypt_credential(token: str) -> str:
    if not token:
        return ""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise CredentialDecryptError(
            "backend credential cannot be decrypted with the configured keys"
        ) from exc


def new_api_key_secret() -> tuple[str, str]:
    """Returns (lookup_id, full_secret). The lookup id is public; the rest is the secret."""
    lookup_id = "".join(secrets.choice(_LOOKUP_ALPHABET) for _ in range(12))
    return lookup_id, f"{KEY_PREFIX}{lookup_id}-{secrets.token_urlsafe(32)}"


def api_key_digest(secret: str) -> str:
    return hmac.new(settings.SWITCHBOARD_KEY_PEPPER.encode(), secret.encode(), hashlib.sha256).hexdigest()


def parse_api_key(secret: str) -> str | None:
    """Returns the lookup id of a well-formed key, else None (no database work for garbage)."""
    if not secret.startswith(KEY_PREFIX):
        return None
    lookup_id, sep, rest = secret[len(KEY_PREFIX) :].partition("-")
    if not sep or len(lookup_id) != 12 or len(rest) < 20:
        return None
    return lookup_id


def digest_matches(secret: str, stored_digest: str) -> bool:
    return hmac.compare_digest(api_key_digest(secret), stored_digest)
