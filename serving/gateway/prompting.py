"""Rendering a release's prompt version with the request's variables.

The prompts app owns rendering (a sandboxed template engine that reports missing, extra and
ill-typed variables by name); this calls its pure renderer with the version's fields, so nothing
touches the database on the event loop (the catalog loaded the version and its prompt).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prompts.rendering import PromptRenderError
from prompts.rendering import render as render_template
from serving.gateway.errors import BadRequest


@dataclass(frozen=True, slots=True)
class Rendered:
    system: str
    text: str


def render(version: Any, variables: dict[str, Any]) -> Rendered:
    try:
        result = render_template(
            prompt_name=version.prompt.name,
            version=version.version,
            system_message=version.system_message,
            template=version.template,
            schema=version.variables_schema,
            variables=variables,
        )
    except PromptRenderError as exc:
        raise BadRequest("prompt variables: " + "; ".join(exc.problems), code="invalid_variables") from exc
    return Rendered(system=result.system, text=result.text)
