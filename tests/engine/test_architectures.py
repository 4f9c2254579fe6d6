"""Other causal-LM families load from a local folder and batch correctly: Qwen2, Mistral
(with a sliding window shorter than the prompts), GPT-2 (learned absolute positions).

The folders are tiny random models written by transformers itself, with the demo tokenizer."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import torch

from serving.engine.default_model import ensure_default_model
from serving.engine.launcher import spawn_engine
from serving.engine.model import LoadedModel, load_model
from tests.engine.scheduler_driver import Driver, Outcome, make_request

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
PROMPTS = {
    "a": "Hello operator, please connect me to the line I ask for",
    "b": "The switchboard connects callers.",
    "c": "def generate(prompt: str) -> str: return prompt * 2 + prompt",
}


def tiny_config(family: str, vocab: int) -> Any:
    from transformers import GPT2Config, MistralConfig, Qwen2Config

    common = {"vocab_size": vocab, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2}
    if family == "gpt2":
        return GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=512, **common)
    shape = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
    }
    if family == "mistral":
        return MistralConfig(sliding_window=8, **shape, **common)
    return Qwen2Config(**shape, **common)


def write_tiny_model(family: str, out: Path, chat_template: bool = True) -> Path:
    from transformers import AutoModelForCausalLM

    demo = ensure_default_model()
    out.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        if chat_template or name != "chat_template.jinja":
            shutil.copy(demo / name, out / name)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(family, vocab=4096))
    with torch.no_grad():  # large random scales, for varied (not repetitive) greedy output
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0, 0.5 if param.shape[0] == 4096 else 0.1)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module", params=["qwen2", "mistral", "gpt2"])
def family_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    folder = write_tiny_model(request.param, tmp_path_factory.mktemp(request.param) / "model")
    return load_model(str(folder))


def run(loaded: LoadedModel, arrivals: dict[int, list[tuple[str, str, int]]]) -> dict[str, Outcome]:
    driver = Driver(loaded)
    try:
        plan = {
            s: [(n, make_request(loaded, PROMPTS[p], k)) for n, p, k in items]
            for s, items in arrivals.items()
        }
        return driver.run(plan)
    finally:
        driver.close()


def test_family_batches_like_it_runs_alone(family_model: LoadedModel) -> None:
    together = run(family_model, {0: [("a", "a", 20)], 2: [("b", "b", 12)], 5: [("c", "c", 10)]})
    for name, prompt, count in (("a", "a", 20), ("b", "b", 12), ("c", "c", 10)):
        alone = run(family_model, {0: [(name, prompt, count)]})[name]
        assert together[name].token_ids == alone.token_ids, family_model.model.config.model_type
        assert together[name].logprobs == pytest.approx(alone.logprobs, abs=1e-4)
    assert len({tuple(o.token_ids) for o in together.values()}) == 3


def test_family_matches_transformers_generate(family_model: LoadedModel) -> None:
    """The engine's own path (padded prefill, hand-managed cache) against model.generate."""
    # Mistral's sliding window needs transformers' own masks; the others take the prebuilt one.
    assert family_model.prebuilt_decode_mask is (family_model.model.config.model_type != "mistral")
    ids = family_model.tokenizer(PROMPTS["c"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        reference = family_model.model.generate(
            ids, max_new_tokens=12, do_sample=False, pad_token_id=2, eos_token_id=None
        )[0, ids.shape[1] :].tolist()
    assert run(family_model, {0: [("c", "c", 12)]})["c"].token_ids == reference


def test_chat_template_is_the_folders_own(family_model: LoadedModel) -> None:
    rendered = family_model.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == "<s><|user|>\nhi</s>\n<|assistant|>\n"


@pytest.fixture(scope="module")
def gpt2_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = write_tiny_model("gpt2", tmp_path_factory.mktemp("served") / "tiny-gpt2", chat_template=False)
    with spawn_engine(str(folder), extra_args=["--model-id", "local/tiny-gpt2"]) as engine:
        yield engine.url


def test_a_local_folder_is_served_over_http(gpt2_engine: str) -> None:
    info = requests.get(gpt2_engine + "/info", timeout=30).json()
    assert info["model_id"] == "local/tiny-gpt2"
    assert info["demo_model"] is False and info["note"] is None
    assert info["max_total_tokens"] == 512  # from the model's n_positions
    body = {"inputs": PROMPTS["a"], "parameters": {"max_new_tokens": 5, "details": True}}
    generated = requests.post(gpt2_engine + "/generate", json=body, timeout=60).json()
    assert generated["details"]["generated_tokens"] == 5


def test_chat_without_a_template_is_a_template_error(gpt2_engine: str) -> None:
    response = requests.post(
        gpt2_engine + "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True},
        timeout=60,
    )
    # Raised before streaming starts, so a plain 422 even for a stream request, as in TGI.
    assert response.status_code == 422
    assert response.json() == {"error": "Template error: template not found", "error_type": "template_error"}


def test_codec_encodes_like_the_tokenizer_from_many_threads(family_model: LoadedModel) -> None:
    texts = [*PROMPTS.values(), "héllo wörld ✓ 你好", "  leading spaces", "tabs\tand\nnewlines", ""] * 8

    def encode(text: str) -> list[int]:
        return family_model.codec.encode(text)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(encode, texts))
    assert results == [list(family_model.tokenizer(t)["input_ids"]) for t in texts]
    ids, offsets = family_model.codec.encode_with_offsets("héllo world")
    assert len(ids) == len(offsets) and offsets[-1][1] == len("héllo world")
