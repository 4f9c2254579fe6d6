"""all-MiniLM-L6-v2 served from the PyPI wheel: TEI's /embed and OpenAI's /v1/embeddings."""

from __future__ import annotations

import base64
import re
import shutil
import struct
from pathlib import Path

import pytest
import requests

from serving.engine.embeddings import IntegrityError, package_model_dir, verify_files

SENTENCES = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
# sentence-transformers' published similarities for this model and these sentences.
EXPECTED_COSINES = {(0, 1): 0.6660, (0, 2): 0.1046, (1, 2): 0.1411}


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_embed_matches_the_published_similarities(engine_url: str) -> None:
    response = requests.post(engine_url + "/embed", json={"inputs": SENTENCES}, timeout=60)
    assert response.status_code == 200
    vectors = response.json()
    assert [len(v) for v in vectors] == [384, 384, 384]
    assert all(dot(v, v) == pytest.approx(1.0, abs=1e-5) for v in vectors)
    for (i, j), expected in EXPECTED_COSINES.items():
        assert dot(vectors[i], vectors[j]) == pytest.approx(expected, abs=1e-3)


def test_embed_single_input_and_unnormalized(engine_url: str) -> None:
    single = requests.post(engine_url + "/embed", json={"inputs": SENTENCES[0]}, timeout=60).json()
    raw = requests.post(
        engine_url + "/embed", json={"inputs": SENTENCES[0], "normalize": False}, timeout=60
    ).json()
    assert len(single) == 1
    norm = dot(raw[0], raw[0]) ** 0.5
    assert norm != pytest.approx(1.0, abs=1e-3)
    assert [x / norm for x in raw[0]] == pytest.approx(single[0], abs=1e-5)


def test_embed_rejects_too_long_input_unless_truncated(engine_url: str) -> None:
    long_text = "word " * 400
    refused = requests.post(engine_url + "/embed", json={"inputs": long_text}, timeout=60)
    assert refused.status_code == 422 and "must have less than 256 tokens" in refused.json()["error"]
    cut = requests.post(engine_url + "/embed", json={"inputs": long_text, "truncate": True}, timeout=60)
    assert cut.status_code == 200 and len(cut.json()[0]) == 384


def test_openai_embeddings_float_and_base64(engine_url: str) -> None:
    floats = requests.post(engine_url + "/v1/embeddings", json={"input": SENTENCES[:2]}, timeout=60).json()
    assert floats["object"] == "list" and floats["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert [d["index"] for d in floats["data"]] == [0, 1]
    assert floats["usage"]["prompt_tokens"] > 0
    encoded = requests.post(
        engine_url + "/v1/embeddings", json={"input": SENTENCES[:2], "encoding_format": "base64"}, timeout=60
    ).json()
    decoded = list(struct.unpack("<384f", base64.b64decode(encoded["data"][0]["embedding"])))
    assert decoded == pytest.approx(floats["data"][0]["embedding"], abs=1e-6)


def test_openai_sdk_reads_the_embeddings(engine_url: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=engine_url + "/v1", api_key="unused")
    result = client.embeddings.create(model="all-MiniLM-L6-v2", input=SENTENCES)
    assert len(result.data) == 3
    assert dot(result.data[0].embedding, result.data[1].embedding) == pytest.approx(0.6660, abs=1e-3)


def test_tampered_model_files_are_refused(tmp_path: Path) -> None:
    source = package_model_dir()
    verify_files(source)  # the installed wheel matches the pinned digests
    copy = tmp_path / "model"
    shutil.copytree(source, copy)
    with (copy / "model.safetensors").open("r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\x00\x00\x80\x3f")
    with pytest.raises(IntegrityError, match=re.escape("model.safetensors")):
        verify_files(copy)
