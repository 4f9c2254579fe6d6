"""Rendering prompt versions in a sandbox, and checking templates and variable schemas.

Templates are Jinja2 in an ImmutableSandboxedEnvironment: no attribute access beyond what the
sandbox allows (dunders, internals and mutating methods raise SecurityError), StrictUndefined so a
missing variable is an error rather than an empty string, no autoescape (this is text for a model,
not HTML), no loader (no include/import/extends). On top of the sandbox, string/list repetition
and powers are capped and the output length is bounded, so a template cannot allocate gigabytes.
Variables are checked against the version's JSON Schema first, and every problem is reported by
name in one go: "missing variable 'customer'", "unexpected variable 'foo'", "variable 'n' must be
integer".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

MAX_OUTPUT_CHARS = 200_000
MAX_EXPONENT = 100
_UNDEFINED_NAME = re.compile(r"^'([^']+)' is undefined$")


class PromptTemplateError(ValueError):
    """The template (or system message) does not parse; `line` is where the parser stopped."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line


class PromptRenderError(ValueError):
    """The variables do not fit the version, or the template failed while rendering."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class _PromptSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponent {right} is larger than {MAX_EXPONENT}")
        if operator == "*":
            sized, count = (left, right) if isinstance(left, str | list | tuple) else (right, left)
            repeats = isinstance(sized, str | list | tuple) and isinstance(count, int)
            if repeats and len(sized) * count > MAX_OUTPUT_CHARS:
                raise SecurityError(f"repetition would exceed {MAX_OUTPUT_CHARS} items")
        return super().call_binop(context, operator, left, right)


_ENV = _PromptSandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


@lru_cache(maxsize=1024)
def _compiled(source: str) -> Template:
    # Versions are immutable, so a template's source is a safe cache key.
    return _ENV.from_string(source)


def template_variables(source: str) -> set[str]:
    """Names the template reads from its variables; raises PromptTemplateError if it does not parse."""
    try:
        return set(meta.find_undeclared_variables(_ENV.parse(source)))
    except TemplateSyntaxError as exc:
        raise PromptTemplateError(exc.message or "syntax error", exc.lineno) from None


def check_variables_schema(schema: Any) -> None:
    """Raises ValueError naming the problem when `schema` is not a usable JSON Schema for variables."""
    if not isinstance(schema, dict):
        raise ValueError('must be a JSON object (a JSON Schema), e.g. {"type": "object", "properties": {}}')
    cls = validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(part) for part in exc.path) or "the top level"
        raise ValueError(f"not a valid JSON Schema: {exc.message} (at {where})") from None
    if schema.get("type", "object") != "object":
        raise ValueError('must describe an object ("type": "object"): variables are named')
    if "properties" in schema and not isinstance(schema["properties"], dict):
        raise ValueError("properties must be an object mapping variable names to schemas")
    for ref in _refs(schema):
        if not ref.startswith("#"):
            raise ValueError(
                f"$ref {ref!r} points outside the schema; only local references (#/...) are allowed"
            )


def _refs(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


@dataclass(frozen=True)
class RenderedPrompt:
    """What the gateway sends on: the system message and the user text of one prompt version."""

    prompt_name: str
    version: int
    system: str
    text: str

    def as_messages(self) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": self.system}] if self.system else []
        return [*messages, {"role": "user", "content": self.text}]


def _type_names(expected: Any) -> str:
    return " or ".join(expected) if isinstance(expected, list) else str(expected)


def _schema_problems(schema: dict[str, Any], variables: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    validator = validator_for(schema, default=Draft202012Validator)(schema)
    for error in sorted(validator.iter_errors(dict(variables)), key=lambda e: [str(p) for p in e.path]):
        if error.validator in ("required", "additionalProperties"):
            continue  # reported by name below, once
        name = str(error.path[0]) if error.path else ""
        if error.validator == "type" and len(error.path) == 1:
            problems.append(f"variable '{name}' must be {_type_names(error.validator_value)}")
        elif name:
            where = "".join(f"[{p!r}]" for p in list(error.path)[1:])
            problems.append(f"variable '{name}'{where}: {error.message}")
        else:
            problems.append(f"variables: {error.message}")
    return problems


def variable_problems(schema: dict[str, Any], used: set[str], variables: Mapping[str, Any]) -> list[str]:
    """Missing, unexpected and ill-typed variables, each by name.

    Required: the schema's `required`, plus anything the template uses that the schema does not
    declare. Allowed: what the schema declares plus what the template uses. Declared but not
    required means optional (the template can test `is defined` or use `| default`).
    """
    declared = set(schema.get("properties", {}))
    required = set(schema.get("required", [])) | (used - declared)
    given = set(variables)
    problems = [f"missing variable '{name}'" for name in sorted(required - given)]
    problems += [f"unexpected variable '{name}'" for name in sorted(given - declared - used)]
    return problems + _schema_problems(schema, variables)


def _render_text(source: str, variables: Mapping[str, Any]) -> str:
    pieces: list[str] = []
    size = 0
    for piece in _compiled(source).generate(**variables):
        size += len(piece)
        if size > MAX_OUTPUT_CHARS:
            raise PromptRenderError([f"rendered prompt is longer than {MAX_OUTPUT_CHARS} characters"])
        pieces.append(piece)
    return "".join(pieces)


def render(
    *,
    prompt_name: str,
    version: int,
    system_message: str,
    template: str,
    schema: dict[str, Any],
    variables: Mapping[str, Any],
) -> RenderedPrompt:
    used = template_variables(template) | template_variables(system_message)
    problems = variable_problems(schema, used, variables)
    if problems:
        raise PromptRenderError(problems)
    try:
        system = _render_text(system_message, variables) if system_message else ""
        text = _render_text(template, variables)
    except SecurityError as exc:
        raise PromptRenderError([f"unsafe template operation blocked by the sandbox: {exc}"]) from None
    except UndefinedError as exc:
        match = _UNDEFINED_NAME.match(str(exc))
        raise PromptRenderError(
            [f"missing variable '{match.group(1)}'" if match else f"undefined value: {exc}"]
        ) from None
    except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError, RecursionError) as exc:
        if isinstance(exc, PromptRenderError):
            raise
        raise PromptRenderError([f"template failed while rendering: {type(exc).__name__}: {exc}"]) from None
    return RenderedPrompt(prompt_name=prompt_name, version=version, system=system, text=text)
