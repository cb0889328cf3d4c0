"""Email templates: Jinja2's sandbox, checked when a content is saved.

A content has three templates (subject, HTML, text). They see:

- ``customer``: ``id``, ``external_id``, ``email``, ``first_name``, ``last_name`` and
  ``fields`` (the free fields, a missing one renders empty);
- every manual variable declared on the content by its name (``{{ InteractionId }}``),
  with its default when the send does not give a value;
- ``unsubscribe_url``, ``brand_name``, and ``short_link(url, alt="")`` which makes a
  tracked short link (the URL itself when the customer refused tracking).

Errors are found at save time: syntax errors with their line, names that are not
available, and errors of a trial render with the defaults. The sandbox refuses access
to Python internals (``__class__``, attributes starting with ``_``, unsafe callables).
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

PART_NAMES = ("subject", "html", "text")
BUILTIN_NAMES = frozenset({"customer", "unsubscribe_url", "brand_name", "short_link"})
VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")

_html_env = ImmutableSandboxedEnvironment(autoescape=True, keep_trailing_newline=True)
_text_env = ImmutableSandboxedEnvironment(autoescape=False, keep_trailing_newline=True)


@dataclass(frozen=True)
class TemplateProblem:
    """One error of one part of a content, with its line (1-based) when known."""

    part: str
    line: int
    cause: str

    def __str__(self) -> str:
        where = f"{self.part}, line {self.line}" if self.line else self.part
        return f"{where}: {self.cause}"


class TemplateInvalid(Exception):
    """A content's templates do not compile or do not render with their defaults."""

    def __init__(self, problems: list[TemplateProblem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


class _Fields(dict[str, Any]):
    """A customer's free fields: a missing field renders as an empty string."""

    def __missing__(self, key: str) -> str:
        return ""


@dataclass(frozen=True)
class CompiledContent:
    """The three compiled templates of a content; safe to share between tasks."""

    subject: Any
    html: Any
    text: Any

    def render(self, context: Mapping[str, Any]) -> tuple[str, str, str]:
        """Subject (one line), HTML and text for one customer."""
        subject = " ".join(self.subject.render(context).split())
        html = self.html.render(context) if self.html is not None else ""
        text = self.text.render(context) if self.text is not None else ""
        return subject, html, text


def compile_content(subject: str, html: str, text: str) -> CompiledContent:
    """Compile the three parts; raises :class:`TemplateInvalid` with every problem."""
    problems: list[TemplateProblem] = []
    compiled: dict[str, Any] = {}
    for part, source in (("subject", subject), ("html", html), ("text", text)):
        env = _html_env if part == "html" else _text_env
        try:
            compiled[part] = env.from_string(source) if source else None
        except TemplateSyntaxError as exc:
            problems.append(TemplateProblem(part, exc.lineno or 0, exc.message or ""))
    if problems:
        raise TemplateInvalid(problems)
    return CompiledContent(compiled["subject"], compiled["html"], compiled["text"])


def check_content(
    subject: str, html: str, text: str, variables: Mapping[str, Any]
) -> CompiledContent:
    """Compile and trial-render a content; every problem is reported at once.

    A name used in a template must be a built-in name or a declared manual variable;
    a trial render with the defaults and an empty customer must succeed.
    """
    problems = [
        TemplateProblem("variables", 0, f"{name!r} is not a valid variable name")
        for name in variables
        if not VARIABLE_NAME.match(name) or name in BUILTIN_NAMES
    ]
    if not subject.strip():
        problems.append(TemplateProblem("subject", 0, "the subject is empty"))
    if not html.strip() and not text.strip():
        problems.append(TemplateProblem("html", 0, "give an HTML or a text part"))
    if problems:
        raise TemplateInvalid(problems)

    compiled = compile_content(subject, html, text)
    allowed = BUILTIN_NAMES | set(variables)
    for part, source in (("subject", subject), ("html", html), ("text", text)):
        problems.extend(_unknown_names(part, source, allowed))
    if problems:
        raise TemplateInvalid(problems)

    problems.extend(_trial_render(compiled, variables))
    if problems:
        raise TemplateInvalid(problems)
    return compiled


def template_context(
    customer: Mapping[str, Any],
    variables: Mapping[str, Any],
    *,
    unsubscribe_url: str,
    brand_name: str,
    short_link: Callable[..., str],
) -> dict[str, Any]:
    """The names a template sees for one personal email."""
    person = dict(customer)
    person["fields"] = _Fields(customer.get("fields") or {})
    return {
        **variables,
        "customer": person,
        "unsubscribe_url": unsubscribe_url,
        "brand_name": brand_name,
        "short_link": short_link,
    }


def _unknown_names(
    part: str, source: str, allowed: frozenset[str] | set[str]
) -> list[TemplateProblem]:
    if not source:
        return []
    env = _html_env if part == "html" else _text_env
    tree = env.parse(source)
    unknown = meta.find_undeclared_variables(tree) - allowed
    return [
        TemplateProblem(
            part,
            _line_of_name(tree, name),
            f"{name!r} is not defined; declare it as a manual variable of the content "
            "or use one of: customer, unsubscribe_url, brand_name, short_link",
        )
        for name in sorted(unknown)
    ]


def _line_of_name(tree: nodes.Template, name: str) -> int:
    for node in tree.find_all(nodes.Name):
        if node.name == name:
            return int(node.lineno)
    return 0


def _trial_render(
    compiled: CompiledContent, variables: Mapping[str, Any]
) -> list[TemplateProblem]:
    context = template_context(
        {"id": 0, "external_id": "", "email": "", "first_name": "", "last_name": ""},
        variables,
        unsubscribe_url="https://example.invalid/unsubscribe",
        brand_name="",
        short_link=lambda url, alt="", **_: str(url),
    )
    problems = []
    for part in PART_NAMES:
        template = getattr(compiled, part)
        if template is None:
            continue
        try:
            template.render(context)
        except (TemplateError, SecurityError, ArithmeticError, TypeError) as exc:
            problems.append(TemplateProblem(part, _render_line(exc), str(exc)))
        except (ValueError, LookupError, AttributeError) as exc:
            problems.append(TemplateProblem(part, _render_line(exc), str(exc)))
    return problems


def _render_line(exc: BaseException) -> int:
    """The template line where a render error happened (Jinja keeps it in the
    traceback as a frame of the file ``<template>``)."""
    line = 0
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == "<template>" and frame.lineno is not None:
            line = frame.lineno
    return line
