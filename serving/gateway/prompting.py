"""Rendering a release's prompt version with the request's variables.

The prompts app owns rendering (`prompts.services.prompt_render`: a sandboxed template engine
that reports missing, extra and ill-typed variables by name). Until that service exists this
module renders with the same sandbox and strictness itself; it switches over by import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from serving.gateway.errors import BadRequest

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


@dataclass(frozen=True, slots=True)
class Rendered:
    system: str
    text: str


def _fallback_render(version: Any, variables: dict[str, Any]) -> Rendered:
    try:
        system = _ENV.from_string(version.system_message or "").render(**variables)
        text = _ENV.from_string(version.template or "").render(**variables)
    except TemplateError as exc:
        raise BadRequest(f"prompt variables: {exc.message}", code="invalid_variables") from exc
    return Rendered(system=system, text=text)


def render(version: Any, variables: dict[str, Any]) -> Rendered:
    try:
        from prompts.services import prompt_render  # type: ignore[attr-defined]
    except ImportError:
        return _fallback_render(version, variables)
    try:
        result = prompt_render(version=version, variables=variables)
    except Exception as exc:  # the prompts app's render error: report its problems to the caller
        problems = getattr(exc, "problems", None) or [str(exc)]
        raise BadRequest("prompt variables: " + "; ".join(map(str, problems)), code="invalid_variables") from exc
    system = getattr(result, "system", None) or getattr(result, "system_message", "") or ""
    text = getattr(result, "text", None) or getattr(result, "prompt", None) or getattr(result, "template", "") or ""
    return Rendered(system=str(system), text=str(text))
