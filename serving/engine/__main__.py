"""`python -m serving.engine --model PATH --port 8081`: load the model and serve it over HTTP."""

from __future__ import annotations

import gc
import logging
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from serving.engine.config import EngineConfig
    from serving.engine.model import LoadedModel

# Nothing may be downloaded at run time; set before transformers / huggingface_hub are imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

log = logging.getLogger("serving.engine")


def main(argv: list[str] | None = None) -> None:
    from serving.engine.config import ConfigError, build_parser, resolve_config

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _configure_torch(args.threads)

    from serving.engine.model import load_model

    try:
        loaded = load_model(args.model, device=args.device, dtype=args.dtype, model_id=args.model_id)
    except (OSError, ValueError) as exc:
        # A missing folder, no config.json, an unknown architecture: one line, not a traceback.
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        sys.exit(f"serving.engine: cannot load model {args.model!r}: {first_line}")
    try:
        config = resolve_config(args, loaded.max_position_embeddings)
    except ConfigError as exc:
        sys.exit(f"serving.engine: {exc}")
    log.info("model %s from %s on %s (%s)", loaded.model_id, loaded.path, loaded.device, loaded.dtype)
    if loaded.note:
        log.warning("%s", loaded.note)
    serve(loaded, config)


def _configure_torch(threads: int | None) -> None:
    import torch

    from serving.engine.config import default_threads

    # The scheduler thread is the only heavy torch user; the event loop (HTTP, JSON) needs a core
    # of its own, or OpenMP's spinning workers and the loop preempt each other (measured: 2 torch
    # threads on 2 busy cores ran decode steps 4-8x slower than 1 thread).
    torch.set_num_threads(threads or default_threads())
    torch.set_num_interop_threads(1)


def serve(loaded: LoadedModel, config: EngineConfig) -> None:
    import uvicorn

    from serving.engine.app import create_app
    from serving.engine.embeddings import Embedder
    from serving.engine.service import EngineService

    service = EngineService(loaded, config)
    embedder = None
    if config.embedding_model:
        if config.embedding_model != "default":
            sys.exit("serving.engine: --embedding-model supports only 'default' (all-MiniLM-L6-v2)")
        embedder = Embedder.load_default()
        service.embedding_model_id = embedder.model_id
        log.info("embeddings: %s", embedder.model_id)
    app = create_app(service, embedder)
    # torch, transformers and the model leave ~400k long-lived objects; a full collection walks
    # them all (measured ~190 ms, during which both the scheduler and the event loop stop).
    # Freezing moves them out of the collector's view; per-request garbage is still collected.
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
