"""Rendering: variables checked against schema and template, every problem named; the sandbox holds."""

from __future__ import annotations

from typing import Any

import pytest

from prompts.rendering import (
    MAX_OUTPUT_CHARS,
    PromptRenderError,
    PromptTemplateError,
    check_variables_schema,
    render,
    template_variables,
)

SCHEMA = {
    "type": "object",
    "properties": {
        "customer": {"type": "string"},
        "n": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "tone": {"type": "string", "enum": ["warm", "formal"]},
    },
    "required": ["customer", "n"],
}


def _render(
    template: str, variables: dict[str, Any], schema: dict[str, Any] | None = None, system: str = ""
) -> Any:
    return render(
        prompt_name="p",
        version=1,
        system_message=system,
        template=template,
        schema=SCHEMA if schema is None else schema,
        variables=variables,
    )


def _problems(template: str, variables: dict[str, Any], schema: dict[str, Any] | None = None) -> list[str]:
    with pytest.raises(PromptRenderError) as caught:
        _render(template, variables, schema)
    return caught.value.problems


def test_renders_system_message_and_template_with_the_variables() -> None:
    rendered = _render(
        "Dear {{ customer }}: {{ n }} orders{% for t in tags %} #{{ t }}{% endfor %}",
        {"customer": "Ada", "n": 3, "tags": ["a", "b"]},
        system="Tone: {{ customer }}",
    )
    assert rendered.text == "Dear Ada: 3 orders #a #b"
    assert rendered.as_messages() == [
        {"role": "system", "content": "Tone: Ada"},
        {"role": "user", "content": "Dear Ada: 3 orders #a #b"},
    ]


def test_reports_missing_extra_and_ill_typed_variables_by_name_all_at_once() -> None:
    problems = _problems("{{ customer }} {{ n }}", {"n": "three", "foo": 1, "tone": "rude"})
    assert "missing variable 'customer'" in problems
    assert "unexpected variable 'foo'" in problems
    assert "variable 'n' must be integer" in problems
    assert any(p.startswith("variable 'tone'") and "'rude' is not one of" in p for p in problems)
    assert len(problems) == 4


def test_template_variables_the_schema_does_not_declare_are_required() -> None:
    assert _problems("{{ greeting }} {{ who }}", {"greeting": "hi"}, schema={}) == ["missing variable 'who'"]
    assert _render("{{ greeting }} {{ who }}", {"greeting": "hi", "who": "you"}, schema={}).text == "hi you"


def test_declared_optional_variables_may_be_left_out() -> None:
    text = _render(
        "{{ customer }}{% if tone is defined %} ({{ tone }}){% endif %}", {"customer": "A", "n": 1}
    ).text
    assert text == "A"


def test_nested_type_errors_name_the_variable_and_the_path() -> None:
    problems = _problems("{{ customer }}", {"customer": "A", "n": 1, "tags": ["ok", 5]})
    assert problems == ["variable 'tags'[1]: 5 is not of type 'string'"]


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ customer.__class__.__base__.__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ customer.upper.__self__ }}",
        "{% set x = [] %}{{ x.append(1) }}",
    ],
)
def test_sandbox_blocks_unsafe_access_as_a_render_error(template: str) -> None:
    optional = {"type": "object", "properties": {"customer": {"type": "string"}}}
    problems = _problems(template, {"customer": "A"}, schema=optional)
    assert len(problems) == 1 and problems[0].startswith("unsafe template operation blocked by the sandbox")


@pytest.mark.parametrize("template", ["{{ 'x' * 10000000 }}", "{{ 9 ** 999999 }}", "{{ [1] * 10000000 }}"])
def test_sandbox_refuses_huge_allocations(template: str) -> None:
    assert "unsafe template operation" in _problems(template, {}, schema={})[0]


def test_output_longer_than_the_cap_is_refused() -> None:
    template = "{% for i in range(100000) %}{% for j in range(3) %}xxxxxxxxxx{% endfor %}{% endfor %}"
    assert _problems(template, {}, schema={}) == [
        f"rendered prompt is longer than {MAX_OUTPUT_CHARS} characters"
    ]


def test_runtime_errors_become_render_errors_not_crashes() -> None:
    assert "ZeroDivisionError" in _problems("{{ 1 / n }}", {"customer": "A", "n": 0})[0]
    assert "template failed while rendering" in _problems("{% include 'other.txt' %}", {}, schema={})[0]


def test_no_autoescape_text_is_passed_through_as_written() -> None:
    assert _render("{{ customer }}", {"customer": "<b>&</b>", "n": 1}).text == "<b>&</b>"


def test_a_template_that_does_not_parse_names_the_line() -> None:
    with pytest.raises(PromptTemplateError) as caught:
        template_variables("line one\nline two {{ oops\nline three")
    assert caught.value.line is not None and str(caught.value).startswith(f"line {caught.value.line}:")
    with pytest.raises(PromptTemplateError, match=r"^line 2: .*endfor"):
        template_variables("{% for x in y %}\n{% endif %}")


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ([], "must be a JSON object"),
        ({"type": "objekt"}, "not a valid JSON Schema"),
        ({"type": "object", "properties": {"n": {"type": 5}}}, "at properties/n/type"),
        ({"type": "object", "required": "customer"}, "not a valid JSON Schema"),
        ({"type": "string"}, 'must describe an object ("type": "object")'),
        ({"properties": {"a": {"$ref": "https://evil.example/s.json"}}}, "points outside the schema"),
    ],
)
def test_bad_schemas_are_named(schema: Any, message: str) -> None:
    with pytest.raises(ValueError, match=None) as caught:
        check_variables_schema(schema)
    assert message in str(caught.value)
