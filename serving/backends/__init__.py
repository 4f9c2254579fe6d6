"""Backend plug-ins, one per kind (`tgi`, `engine`, `openai`); importing this registers them."""

from serving.backends import openai, tgi
from serving.backends.base import (
    BackendClient,
    BackendError,
    ChunkStream,
    StreamCut,
    Target,
    backend_class,
    register_backend,
    registered_kinds,
)

__all__ = [
    "BackendClient",
    "BackendError",
    "ChunkStream",
    "StreamCut",
    "Target",
    "backend_class",
    "openai",
    "register_backend",
    "registered_kinds",
    "tgi",
]
