"""The demo model: a small Llama with random weights, built offline and byte-identical everywhere.

Nothing is downloaded. The tokenizer is a byte-level BPE trained on `corpus.corpus_lines()`, and
the weights are drawn from numpy's PCG64 as uniform values. Uniform draws need only integer
arithmetic and one IEEE multiply, whereas normal draws go through log/cos, whose SIMD
implementations differ between CPUs; that difference would change the bytes of the weights.

Usage: `python -m serving.engine.default_model [--out DIR]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenizers import Tokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR_ENV = "SWITCHBOARD_DEMO_MODEL_DIR"
DEMO_MODEL_ID = "switchboard/demo-random-llama"
DEMO_NOTE = (
    "Demo model with RANDOM weights (generated offline by serving.engine.default_model): "
    "its output is gibberish. Serve a real local model folder with --model PATH."
)
MANIFEST_NAME = "switchboard-demo.json"
BOS, EOS, PAD = "<s>", "</s>", "<pad>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' }}\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}\n{% endif %}"
)


@dataclass(frozen=True)
class DemoModelSpec:
    """Sizes chosen so that a decode step for a batch of 16 takes a few ms on 2 CPU cores."""

    vocab_size: int = 4096
    hidden_size: int = 256
    intermediate_size: int = 688
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    max_position_embeddings: int = 2048
    # Untied output head and large embeddings: with tied random weights the argmax is almost
    # always the last input token again, and "for for for ..." would make any equality test on
    # generated tokens meaningless. These scales give varied greedy outputs.
    embedding_scale: float = 1.0
    linear_scale: float = 0.1
    seed: int = 20261128


def default_model_dir() -> Path:
    """Where `--model default` lives: $SWITCHBOARD_DEMO_MODEL_DIR or .data/models/switchboard-demo."""
    configured = os.environ.get(DEFAULT_DIR_ENV)
    return Path(configured) if configured else REPO_ROOT / ".data" / "models" / "switchboard-demo"


def is_demo_model(path: Path) -> bool:
    return (path / MANIFEST_NAME).is_file()


def ensure_default_model(out: Path | None = None) -> Path:
    """Build the demo model into `out` unless a complete one is already there."""
    target = out if out is not None else default_model_dir()
    if is_demo_model(target):
        return target
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(
            f"{target} exists but holds no complete demo model ({MANIFEST_NAME}); remove it"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename at the end, so that engines started at the same time
    # never load a half-written folder; the loser of the rename race discards its copy.
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    staging.chmod(0o755)
    try:
        build_default_model(staging)
        try:
            staging.rename(target)
        except OSError:
            if not is_demo_model(target):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def build_default_model(out: Path, spec: DemoModelSpec = DemoModelSpec()) -> None:
    """Write tokenizer, config and weights into `out` (which must exist), manifest last."""
    tokenizer = _train_tokenizer(spec)
    _save_tokenizer(tokenizer, out)
    _save_model(spec, tokenizer, out)
    _write_manifest(out)


def _train_tokenizer(spec: DemoModelSpec) -> Tokenizer:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    from serving.engine.corpus import corpus_lines

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=[BOS, EOS, PAD, *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus_lines(), trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return tokenizer


def _save_tokenizer(tokenizer: Tokenizer, out: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS),
        model_max_length=DemoModelSpec.max_position_embeddings,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    wrapped.save_pretrained(out)
    # TGI reads the template from tokenizer_config.json or chat_template.json, not from
    # transformers 5's chat_template.jinja; writing chat_template.json lets real TGI serve it too.
    (out / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}, indent=2) + "\n")


def _save_model(spec: DemoModelSpec, tokenizer: Tokenizer, out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_attention_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.token_to_id(BOS),
        eos_token_id=tokenizer.token_to_id(EOS),
        pad_token_id=tokenizer.token_to_id(PAD),
    )
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = model.to_empty(device="cpu").eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(_deterministic_weight(name, tuple(param.shape), spec))
    model.save_pretrained(out)


def _deterministic_weight(name: str, shape: tuple[int, ...], spec: DemoModelSpec) -> object:
    import numpy as np
    import torch

    if len(shape) == 1:
        # RMSNorm gains; 1.0 is what a freshly initialised Llama has.
        return torch.ones(shape, dtype=torch.float32)
    # A per-tensor seed from its name, so the draw does not depend on iteration order.
    digest = hashlib.sha256(f"{spec.seed}:{name}".encode()).digest()
    rng = np.random.Generator(np.random.PCG64(int.from_bytes(digest[:8], "little")))
    scale = spec.embedding_scale if "embed" in name else spec.linear_scale
    values = (rng.random(int(np.prod(shape)), dtype=np.float64) * 2.0 - 1.0) * scale
    return torch.from_numpy(values.astype(np.float32).reshape(shape))


def _write_manifest(out: Path) -> None:
    files = sorted(p for p in out.rglob("*") if p.is_file())
    digests = {p.relative_to(out).as_posix(): _sha256(p) for p in files}
    manifest = {"model_id": DEMO_MODEL_ID, "note": DEMO_NOTE, "sha256": digests}
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def folder_digests(path: Path) -> dict[str, str]:
    """SHA-256 of every file under `path`, keyed by relative path (used to compare builds)."""
    return {p.relative_to(path).as_posix(): _sha256(p) for p in sorted(path.rglob("*")) if p.is_file()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the random-weight demo model offline.")
    parser.add_argument("--out", type=Path, default=None, help=f"folder (default: {default_model_dir()})")
    args = parser.parse_args(argv)
    path = ensure_default_model(args.out)
    print(path)


if __name__ == "__main__":
    main()
