"""Request bodies, shaped after TGI's serde structs (router/src/lib.rs).

Strict mode mirrors serde: a string is not a number, `1.0` is not an integer, `null` is only
accepted where TGI has an `Option`. Unsigned Rust integers get `ge=0` so that `-1` is a body
error (plain-text 422), as it is for TGI, not a validation message.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

U32 = Annotated[int, Field(ge=0, le=2**32 - 1)]
U64 = Annotated[int, Field(ge=0, le=2**64 - 1)]


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class Grammar(_Body):
    type: Literal["json", "json_object", "regex", "json_schema"]
    value: Any


class GenerateParameters(_Body):
    best_of: U32 | None = None
    temperature: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    typical_p: float | None = None
    do_sample: bool = False
    max_new_tokens: U32 | None = None
    return_full_text: bool | None = None
    stop: list[str] = Field(default_factory=list)
    truncate: U32 | None = None
    watermark: bool = False
    details: bool = False
    decoder_input_details: bool = False
    seed: U64 | None = None
    top_n_tokens: U32 | None = None
    grammar: Grammar | None = None
    adapter_id: str | None = None


def _absent_parameters() -> GenerateParameters:
    # TGI quirk: a body without "parameters" gets default_parameters(), where do_sample is true,
    # while "parameters": {} gets the bool default, false.
    return GenerateParameters(do_sample=True)


class GenerateRequest(_Body):
    inputs: str
    parameters: GenerateParameters = Field(default_factory=_absent_parameters)


class CompatGenerateRequest(GenerateRequest):
    stream: bool = False


class TextChunk(_Body):
    type: Literal["text"]
    text: str


class ImageChunk(_Body):
    type: Literal["image_url"]
    image_url: Any


class Message(_Body):
    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    role: str
    content: str | list[TextChunk | ImageChunk] | None = None
    name: str | None = None
    tool_calls: Any = None


class StreamOptions(_Body):
    include_usage: bool = False


class ChatRequest(_Body):
    model: str | None = None
    messages: list[Message]
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    repetition_penalty: float | None = None
    logit_bias: Any = None
    logprobs: bool | None = None
    top_logprobs: U32 | None = None
    max_tokens: U32 | None = None
    max_completion_tokens: U32 | None = None
    n: U32 | None = None
    seed: U64 | None = None
    # TGI takes only a list; OpenAI SDK users often send one string, which costs nothing to accept.
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    tool_prompt: str | None = None
    response_format: Any = None


class CompletionRequest(_Body):
    model: str | None = None
    prompt: str | list[str]
    max_tokens: U32 | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: U64 | None = None
    stop: str | list[str] | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    suffix: str | None = None


class EmbedRequest(_Body):
    """TEI's /embed body."""

    inputs: str | list[str]
    normalize: bool = True
    truncate: bool = False


class OpenAIEmbeddingRequest(_Body):
    input: str | list[str]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
