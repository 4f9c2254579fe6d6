"""Loading a local Hugging Face causal-LM folder (weights, tokenizer, chat template)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from serving.engine.batch import supports_prebuilt_mask
from serving.engine.default_model import DEMO_MODEL_ID, DEMO_NOTE, ensure_default_model, is_demo_model

log = logging.getLogger(__name__)


class TextCodec:
    """Tokenisation that is safe to call from several threads at once.

    The transformers wrapper of a fast tokenizer may reconfigure the shared Rust tokenizer
    (padding, truncation) on every call, which fails with "Already borrowed" when two validation
    workers encode at the same time. The Rust backend's `encode` changes nothing, so it is called
    directly; slow tokenizers go through a lock.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._backend = getattr(tokenizer, "backend_tokenizer", None)
        self._lock = threading.Lock()

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        return self.encode_with_offsets(text, add_special_tokens=add_special_tokens)[0]

    def encode_with_offsets(
        self, text: str, *, add_special_tokens: bool = True
    ) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids and (start, end) character offsets into `text`."""
        if self._backend is not None:
            encoding = self._backend.encode(text, add_special_tokens=add_special_tokens)
            return list(encoding.ids), [tuple(o) for o in encoding.offsets]
        with self._lock:
            ids = list(self._tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])
        return ids, [(0, 0)] * len(ids)  # TGI: no offsets without a fast tokenizer


@dataclass(frozen=True)
class LoadedModel:
    model: Any  # transformers.PreTrainedModel
    tokenizer: Any  # transformers tokenizer (fast when the folder has tokenizer.json)
    codec: TextCodec
    path: Path
    model_id: str
    device: torch.device
    dtype: torch.dtype
    vocab_size: int
    eos_ids: frozenset[int]
    special_ids: frozenset[int]
    max_position_embeddings: int | None
    note: str | None
    prebuilt_decode_mask: bool = False

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))


def resolve_model_path(model: str) -> Path:
    """`default` means the demo model, built on first use; anything else is a local folder."""
    if model == "default":
        return ensure_default_model()
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} is not a model folder (no config.json); weights are never downloaded"
        )
    return path


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    if requested != "auto":
        return getattr(torch, requested)
    # float32 on CPU: bfloat16 matmuls are slow there and their noise could make a row's greedy
    # tokens depend on what else is in the batch.
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_model(
    model: str, *, device: str = "auto", dtype: str = "auto", model_id: str | None = None
) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = resolve_model_path(model)
    torch_device = pick_device(device)
    torch_dtype = pick_dtype(dtype, torch_device)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    network: Any = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, local_files_only=True)
    network = network.to(torch_device).eval()
    demo = is_demo_model(path)
    return LoadedModel(
        model=network,
        tokenizer=tokenizer,
        codec=TextCodec(tokenizer),
        path=path,
        model_id=model_id or (DEMO_MODEL_ID if demo else str(path)),
        device=torch_device,
        dtype=torch_dtype,
        vocab_size=int(network.get_output_embeddings().weight.shape[0]),
        eos_ids=_eos_ids(network, tokenizer),
        special_ids=frozenset(int(i) for i in tokenizer.all_special_ids),
        max_position_embeddings=_max_positions(network.config),
        note=DEMO_NOTE if demo else None,
        prebuilt_decode_mask=supports_prebuilt_mask(network),
    )


def _eos_ids(network: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    configured = getattr(network.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


def _max_positions(config: Any) -> int | None:
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None
