"""The demo model is generated offline and comes out byte-identical every time, everywhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import requests

from serving.engine.default_model import DEMO_MODEL_ID, MANIFEST_NAME, folder_digests
from serving.engine.launcher import REPO_ROOT

# Digests of a build with torch 2.13.0, transformers 5.24.0, tokenizers 0.23.3 and numpy 2.4.6.
# The weights depend only on numpy's PCG64 stream and IEEE arithmetic, so they must match on any
# machine; if a dependency upgrade changes them, the model's outputs change too and every
# recorded expectation built on them must be reviewed, hence a test rather than a comment.
PINNED = {
    "model.safetensors": "0263c7b760521c848787fba123fa867eee3219da94f2a8a77128977a92960c1d",
    "tokenizer.json": "f51158d477607021986fc55f0cfe1f9e623e7844bbabe189ec7546160a0580bc",
}


def build(out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "serving.engine.default_model", "--out", str(out)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_two_builds_in_separate_processes_are_byte_identical(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    processes = [build(first), build(second)]
    for process in processes:
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output.decode()
    digests = folder_digests(first)
    assert digests == folder_digests(second)
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        MANIFEST_NAME,
    } <= set(digests)
    for name, expected in PINNED.items():
        assert digests[name] == expected, f"{name} differs from the pinned build"


def test_engine_info_says_it_is_a_random_demo_model(engine_url: str) -> None:
    info = requests.get(engine_url + "/info", timeout=30).json()
    assert info["model_id"] == DEMO_MODEL_ID
    assert info["demo_model"] is True
    assert "RANDOM weights" in info["note"]
