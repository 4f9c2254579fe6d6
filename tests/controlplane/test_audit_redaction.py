"""Audit diffs hide secrets but keep ordinary fields whose names merely resemble them."""

from controlplane.services.audit import REDACTED, redact


def test_secret_fields_are_redacted_at_any_depth() -> None:
    diff = redact(
        {
            "credentials": "sk-live-123",
            "nested": {"access_token": "abc", "client-secret": "s", "password": "p"},
            "items": [{"digest": "f00"}],
        }
    )
    assert diff["credentials"] == REDACTED
    assert diff["nested"] == {"access_token": REDACTED, "client-secret": REDACTED, "password": REDACTED}
    assert diff["items"] == [{"digest": REDACTED}]


def test_token_counts_and_timeouts_are_not_mistaken_for_secrets() -> None:
    plain = {
        "max_new_tokens": 64,
        "tokenizer": "meta-llama/x",
        "tpm_limit": 1000,
        "has_credentials": True,
        "first_token_timeout_s": 30.0,
        "lookup_id": "abc",
    }
    assert redact(plain) == plain
    assert redact({"signing_key": "k", "refresh-token": "t"}) == {
        "signing_key": REDACTED,
        "refresh-token": REDACTED,
    }
