"""Client wire formats: parsing OpenAI and TGI requests, and encoding answers and stream events.

Requests become a `ClientRequest` (protocol-neutral); answers are encoded from `TokenChunk`s, so
an OpenAI client can be served by a TGI backend and the reverse. Bad input is a 400 whose message
names the field and what to send instead.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from serving.gateway.errors import BadRequest
from serving.types import Api, TokenChunk

_ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})
_FLOAT_PARAMS = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "frequency_penalty": (-2.0, 2.0),
    "presence_penalty": (-2.0, 2.0),
}
_TGI_PASSTHROUGH = (
    "top_k",
    "typical_p",
    "repetition_penalty",
    "watermark",
    "truncate",
    "grammar",
    "top_n_tokens",
    "do_sample",
)
_OPENAI_FINISH = {"eos_token": "stop", "stop_sequence": "stop", "length": "length"}
# One compact encoder for the process: json.dumps with non-default arguments builds a new
# JSONEncoder on every call.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def compact_json(value: Any) -> bytes:
    return _COMPACT.encode(value).encode()


@dataclass(frozen=True, slots=True)
class ClientRequest:
    api: Api
    endpoint: str
    stream: bool = False
    include_usage: bool = False
    messages: tuple[dict[str, Any], ...] = ()
    prompt: str = ""
    max_tokens: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)
    user: str = ""
    details: bool = False  # TGI: include details
    return_full_text: bool = False  # TGI: prepend the prompt
    compat_list: bool = False  # TGI `POST /`: a one-element list when not streaming
    inputs: tuple[str, ...] = ()  # embeddings


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _int(body: dict[str, Any], name: str, *, minimum: int = 1) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BadRequest(f"'{name}' must be an integer >= {minimum}, got {value!r}")
    return value


def _float_params(body: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, (low, high) in _FLOAT_PARAMS.items():
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise BadRequest(f"'{name}' must be a number between {low} and {high}, got {value!r}")
        params[name] = float(value)
    return params


def _stop(value: Any) -> list[str] | None:
    if value is None:
        return None
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > 4:
        raise BadRequest("'stop' must be a string or a list of at most 4 non-empty strings")
    return stops


def _common(body: dict[str, Any]) -> dict[str, Any]:
    params = _float_params(body)
    seed = body.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise BadRequest(f"'seed' must be an integer, got {seed!r}")
        params["seed"] = seed
    stop = _stop(body.get("stop"))
    if stop:
        params["stop"] = stop
    if body.get("n", 1) != 1:
        raise BadRequest("'n' other than 1 is not supported: send one request per choice")
    return params


def _variables(body: dict[str, Any]) -> dict[str, Any]:
    variables = body.get("variables") or {}
    if not isinstance(variables, dict):
        raise BadRequest("'variables' must be an object of prompt variables")
    return variables


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required: the name of the endpoint to call (GET /v1/models lists them)")
    return model


def _content(message: Any, index: int) -> dict[str, Any]:
    if not isinstance(message, dict) or message.get("role") not in _ROLES:
        raise BadRequest(f"messages[{index}] needs a 'role' of {sorted(_ROLES)} and a 'content'")
    content = message.get("content")
    if isinstance(content, list):  # content parts: only text is supported
        texts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if len(texts) != len(content):
            raise BadRequest(f"messages[{index}].content: only text parts are supported")
        content = "".join(texts)
    if content is None and message["role"] == "assistant":
        content = ""
    if not isinstance(content, str):
        raise BadRequest(f"messages[{index}].content must be a string or a list of text parts")
    role = "system" if message["role"] == "developer" else message["role"]
    return {"role": role, "content": content}


def _stream_options(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = bool(body.get("stream", False))
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise BadRequest("'stream_options' must be an object")
    return stream, bool(options.get("include_usage", False))


def parse_chat(body: dict[str, Any]) -> ClientRequest:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list of {role, content} objects")
    stream, include_usage = _stream_options(body)
    max_tokens = _int(body, "max_completion_tokens") or _int(body, "max_tokens")
    return ClientRequest(
        api="chat",
        endpoint=_model(body),
        stream=stream,
        include_usage=include_usage,
        messages=tuple(_content(m, i) for i, m in enumerate(messages)),
        max_tokens=max_tokens,
        params=_common(body),
        variables=_variables(body),
        user=str(body.get("user") or ""),
    )


def parse_completion(body: dict[str, Any]) -> ClientRequest:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise BadRequest("'prompt' must be a string (one prompt per request)")
    if body.get("suffix"):
        raise BadRequest("'suffix' is not supported: put the text into the prompt")
    stream, include_usage = _stream_options(body)
    return ClientRequest(
        api="completions",
        endpoint=_model(body),
        stream=stream,
        include_usage=include_usage,
        prompt=prompt,
        max_tokens=_int(body, "max_tokens"),
        params=_common(body),
        variables=_variables(body),
        user=str(body.get("user") or ""),
    )


def parse_generate(body: dict[str, Any], *, endpoint: str, stream: bool, compat: bool) -> ClientRequest:
    inputs = body.get("inputs")
    if not isinstance(inputs, str) or not inputs:
        raise BadRequest("'inputs' must be a non-empty string")
    raw = body.get("parameters") or {}
    if not isinstance(raw, dict):
        raise BadRequest("'parameters' must be an object")
    if raw.get("best_of") not in (None, 1):
        raise BadRequest("'best_of' is not supported: send separate requests")
    if raw.get("decoder_input_details"):
        raise BadRequest("'decoder_input_details' is not supported through the gateway")
    params = _common({k: raw.get(k) for k in ("temperature", "top_p", "frequency_penalty", "seed", "stop")})
    params.update({name: raw[name] for name in _TGI_PASSTHROUGH if raw.get(name) is not None})
    if compat:
        stream = bool(body.get("stream", False))
    return ClientRequest(
        api="generate",
        endpoint=endpoint,
        stream=stream,
        prompt=inputs,
        max_tokens=_int(raw, "max_new_tokens"),
        params=params,
        variables=_variables(body),
        details=bool(raw.get("details", False)),
        return_full_text=bool(raw.get("return_full_text") or False),
        compat_list=compat and not stream,
    )


def parse_embeddings(body: dict[str, Any]) -> ClientRequest:
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(x, str) and x for x in inputs):
        raise BadRequest("'input' must be a non-empty string or a list of non-empty strings")
    if len(inputs) > 256:
        raise BadRequest("'input' may hold at most 256 strings per request")
    return ClientRequest(
        api="embeddings", endpoint=_model(body), inputs=tuple(inputs), user=str(body.get("user") or "")
    )


# --- encoding -------------------------------------------------------------------------------------


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + compact_json(payload) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def openai_finish(reason: str) -> str:
    return _OPENAI_FINISH.get(reason, reason)


@dataclass
class StreamEncoder:
    """Turns chunks into the client's SSE events; one instance per response."""

    request: ClientRequest
    request_id: str
    created: int = field(default_factory=lambda: int(time.time()))
    index: int = 0
    text: list[str] = field(default_factory=list)
    _token_frame: tuple[bytes, bytes] | None = None

    def token(self, chunk: TokenChunk) -> bytes:
        self.index += 1
        if self.request.api == "generate":
            self.text.append("" if chunk.special else chunk.text)
            return sse(self._tgi_event(chunk, final=None))
        if not chunk.text or chunk.special:
            return b""
        if not self._token_frame:
            self._token_frame = self._frame()
        head, tail = self._token_frame
        return head + json.dumps(chunk.text).encode() + tail

    def _frame(self) -> tuple[bytes, bytes]:
        """The bytes around a token's text in an OpenAI chunk: built once per stream, since
        serialising a nested dict per token is most of the relay's cost."""
        marker = "\u0000TOKEN\u0000"
        encoded = sse(self._openai_event(marker, None))
        head, _, tail = encoded.partition(json.dumps(marker).encode())
        return head, tail

    def final(self, chunk: TokenChunk, *, tokens_in: int, tokens_out: int, extra: dict[str, Any]) -> bytes:
        reason = chunk.finish_reason or "length"
        if self.request.api == "generate":
            self.index += 1
            if not chunk.special:
                self.text.append(chunk.text)
            details = {
                "finish_reason": reason,
                "generated_tokens": tokens_out,
                "seed": None,
                "input_length": tokens_in,
            }
            return sse(self._tgi_event(chunk, final=details))
        out = b""
        if chunk.text and not chunk.special:
            out += sse(self._openai_event(chunk.text, None))
        out += sse(self._openai_event(None, openai_finish(reason)))
        if self.request.include_usage:
            usage = {
                "prompt_tokens": tokens_in,
                "completion_tokens": tokens_out,
                "total_tokens": tokens_in + tokens_out,
            }
            event = {**self._envelope(), "choices": [], "usage": usage, "switchboard": extra}
            out += sse(event)
        return out + DONE

    def error(self, message: str, error_type: str) -> bytes:
        if self.request.api == "generate":
            return sse({"error": message, "error_type": error_type})
        return sse({"error": {"message": message, "type": error_type, "code": error_type}})

    def _envelope(self) -> dict[str, Any]:
        chat = self.request.api == "chat"
        return {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{self.request_id}",
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": self.created,
            "model": self.request.endpoint,
        }

    def _openai_event(self, text: str | None, finish: str | None) -> dict[str, Any]:
        if self.request.api == "chat":
            delta = {"role": "assistant", "content": text} if text is not None else {}
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        return {**self._envelope(), "choices": [choice]}

    def _tgi_event(self, chunk: TokenChunk, *, final: dict[str, Any] | None) -> dict[str, Any]:
        token = {
            "id": chunk.token_id if chunk.token_id is not None else 0,
            "text": chunk.text,
            "logprob": chunk.logprob if chunk.logprob is not None else 0.0,
            "special": chunk.special or (final is not None and chunk.token_id is None and not chunk.text),
        }
        generated = None
        if final is not None:
            generated = "".join(self.text)
            if self.request.return_full_text:
                generated = self.request.prompt + generated
        return {
            "index": self.index,
            "token": token,
            "generated_text": generated,
            "details": final if (final is not None and self.request.details) else None,
        }


def completion_body(
    request: ClientRequest,
    request_id: str,
    *,
    text: str,
    finish: str,
    tokens_in: int,
    tokens_out: int,
    extra: dict[str, Any],
) -> Any:
    if request.api == "generate":
        generated = request.prompt + text if request.return_full_text else text
        body: dict[str, Any] = {"generated_text": generated}
        if request.details:
            body["details"] = {
                "finish_reason": finish,
                "generated_tokens": tokens_out,
                "seed": None,
                "prefill": [],
                "tokens": [],
            }
        return [body] if request.compat_list else body
    usage = {
        "prompt_tokens": tokens_in,
        "completion_tokens": tokens_out,
        "total_tokens": tokens_in + tokens_out,
    }
    chat = request.api == "chat"
    choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": openai_finish(finish)}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{request_id}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": request.endpoint,
        "choices": [choice],
        "usage": usage,
        "switchboard": extra,
    }


def error_body(api: str, status: int, code: str, message: str) -> dict[str, Any]:
    if api == "generate":
        error_type = {422: "validation", 429: "overloaded", 400: "validation"}.get(status, code)
        return {"error": message, "error_type": error_type, "code": code}
    return {"error": {"message": message, "type": code, "code": code}}
