"""The one interface every backend kind implements, and the registry that finds them by kind.

A backend plug-in turns a `GenerationRequest` into HTTP calls on one replica and parses the answer
back into `TokenChunk`s or a `Completion`. It owns no routing, retry or accounting: the relay does
that, so a new kind is only wire-format code.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import aiohttp

from serving.types import Completion, EmbeddingResult, GenerationRequest, TokenChunk


class Target:
    """One replica, with what a call to it needs (built once per replica by the catalog)."""

    __slots__ = (
        "_headers",
        "_timeout",
        "base",
        "connect_timeout_s",
        "credential",
        "first_token_timeout_s",
        "total_timeout_s",
        "url",
    )

    def __init__(
        self,
        *,
        url: str,
        credential: str,
        connect_timeout_s: float,
        first_token_timeout_s: float,
        total_timeout_s: float,
    ) -> None:
        self.url = url
        self.base = url.rstrip("/")
        self.credential = credential
        self.connect_timeout_s = connect_timeout_s
        self.first_token_timeout_s = first_token_timeout_s
        self.total_timeout_s = total_timeout_s
        # sock_read bounds every wait for bytes, so a stalled stream ends instead of hanging.
        self._timeout = aiohttp.ClientTimeout(
            total=total_timeout_s, sock_connect=connect_timeout_s, sock_read=first_token_timeout_s
        )
        self._headers = {"Authorization": f"Bearer {credential}"} if credential else {}

    def __repr__(self) -> str:  # never the credential
        return f"Target({self.url})"

    def timeout(self) -> aiohttp.ClientTimeout:
        return self._timeout

    def headers(self) -> dict[str, str]:
        return self._headers


class BackendError(Exception):
    """A backend refused or failed. `retryable` says whether another replica may succeed."""

    def __init__(
        self, message: str, *, status: int = 502, retryable: bool = True, error_type: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retryable = retryable
        self.error_type = error_type


class StreamCut(BackendError):
    """The stream ended (connection lost, no final event) after tokens had been sent."""

    def __init__(self, message: str = "the backend stream ended before the generation finished") -> None:
        super().__init__(message, status=502, retryable=False, error_type="incomplete_generation_stream")


def error_from_status(status: int, body: bytes) -> BackendError:
    """Client errors (bad parameters) are the caller's to fix and are not retried; 429, 5xx are."""
    message = _error_message(body) or f"backend answered HTTP {status}"
    retryable = status >= 500 or status in (408, 429)
    return BackendError(message, status=status, retryable=retryable)


def _error_message(body: bytes) -> str:
    try:
        payload = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")[:500]
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        return str(error.get("message", ""))[:500]
    return str(error or "")[:500]


class ChunkStream(ABC):
    """An open upstream stream. `close()` is synchronous so it can run inside cancellation."""

    def __aiter__(self) -> ChunkStream:
        return self

    @abstractmethod
    async def __anext__(self) -> TokenChunk: ...

    @abstractmethod
    def close(self) -> None: ...

    def ready(self) -> bool:
        """True when the next chunk is already buffered (awaiting it does no I/O)."""
        return False


class BackendClient(ABC):
    kind: ClassVar[str]

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    @abstractmethod
    async def stream(self, target: Target, request: GenerationRequest) -> ChunkStream:
        """Sends the request and returns once the response headers arrived (not the first token)."""

    @abstractmethod
    async def generate(self, target: Target, request: GenerationRequest) -> Completion: ...

    @abstractmethod
    async def embed(self, target: Target, *, model: str, inputs: list[str]) -> EmbeddingResult: ...

    @abstractmethod
    async def health(self, target: Target) -> bool: ...

    async def _post(self, target: Target, path: str, body: dict[str, Any]) -> aiohttp.ClientResponse:
        try:
            response = await self.session.post(
                target.base + path, json=body, headers=target.headers(), timeout=target.timeout()
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise BackendError(f"cannot reach backend: {type(exc).__name__}", status=502) from exc
        if response.status >= 400:
            body_bytes = await response.read()
            response.release()
            raise error_from_status(response.status, body_bytes)
        return response

    async def _post_json(self, target: Target, path: str, body: dict[str, Any]) -> tuple[Any, Any]:
        response = await self._post(target, path, body)
        try:
            payload = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise BackendError(f"backend answer unreadable: {type(exc).__name__}") from exc
        finally:
            response.release()
        return payload, response.headers

    async def _get_ok(self, target: Target, path: str) -> bool:
        timeout = aiohttp.ClientTimeout(total=max(target.connect_timeout_s, 1.0) + 1.0)
        try:
            async with self.session.get(
                target.base + path, headers=target.headers(), timeout=timeout
            ) as response:
                await response.read()
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False


_REGISTRY: dict[str, type[BackendClient]] = {}
_C = TypeVar("_C", bound=type[BackendClient])


def register_backend(kind: str) -> Callable[[_C], _C]:
    def decorate(cls: _C) -> _C:
        if kind in _REGISTRY:
            raise RuntimeError(f"backend kind {kind!r} is registered twice")
        cls.kind = kind
        _REGISTRY[kind] = cls
        return cls

    return decorate


def backend_class(kind: str) -> type[BackendClient]:
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise KeyError(f"no backend plug-in for kind {kind!r}; known: {sorted(_REGISTRY)}") from None


def registered_kinds() -> list[str]:
    return sorted(_REGISTRY)
