"""Exact prompt token counts from a model version's own tokenizer, when it is on this machine.

A `tokenizer.json` (the `tokenizers` library's format, which every fast Hugging Face tokenizer
ships) is looked for, in order: the model version's `tokenizer` field (a file or a folder), its
`local_path`, the local Hugging Face cache for its repo and pinned revision (never a download),
and the folder of the embedded demo model. Each file is loaded once per process (in the catalog's
loader thread, never on the event loop) and shared by every release that uses it.

Without a tokenizer the gateway falls back to byte bounds (resolve.py); counting is an
improvement in precision, never a condition for serving.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokenizers import Tokenizer

logger = logging.getLogger(__name__)
_FILE = "tokenizer.json"
_loaded: dict[tuple[str, float], TokenCounter | None] = {}
_lock = threading.Lock()


class TokenCounter:
    """Counts the tokens of a text as the model's tokenizer splits it (no special tokens: the
    chat template's are covered by resolve.PER_MESSAGE_OVERHEAD / PER_REQUEST_OVERHEAD)."""

    def __init__(self, tokenizer: Tokenizer, source: str) -> None:
        self.tokenizer = tokenizer
        self.source = source

    def count(self, text: str) -> int:
        if not text:
            return 0
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def __repr__(self) -> str:
        return f"TokenCounter({self.source})"


def _candidates(model: Any) -> list[Path]:
    found = []
    for configured in (model.tokenizer, model.local_path):
        if configured:
            path = Path(configured).expanduser()
            found.append(path if path.suffix == ".json" else path / _FILE)
    if model.hf_repo_id and model.hf_revision:
        cached = _hub_cache(model.hf_repo_id, model.hf_revision)
        if cached is not None:
            found.append(cached)
    from serving.engine.default_model import DEMO_MODEL_ID, default_model_dir

    if model.hf_repo_id == DEMO_MODEL_ID:
        found.append(default_model_dir() / _FILE)
    return found


def _hub_cache(repo_id: str, revision: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo_id, _FILE, revision=revision)
    except Exception:  # a malformed repo id or an unreadable cache: no exact count, not an error
        return None
    return Path(cached) if isinstance(cached, str) else None


def counter_for(model: Any) -> TokenCounter | None:
    """The counter for a ModelVersion row, or None when no tokenizer file is available here."""
    for path in _candidates(model):
        try:
            stamp = path.stat().st_mtime
        except OSError:
            continue
        return _load(path, stamp)
    return None


def _load(path: Path, stamp: float) -> TokenCounter | None:
    key = (str(path), stamp)
    with _lock:
        if key in _loaded:
            return _loaded[key]
        try:
            from tokenizers import Tokenizer

            counter: TokenCounter | None = TokenCounter(Tokenizer.from_file(str(path)), str(path))
        except Exception:  # unreadable file: fall back to byte bounds, say so once
            logger.warning("cannot load tokenizer %s; prompt tokens are bounded by bytes instead", path)
            counter = None
        _loaded[key] = counter
        return counter
