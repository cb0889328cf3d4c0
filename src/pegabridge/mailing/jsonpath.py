"""The small part of JSONPath that a trigger mapping needs.

A path starts at ``$`` and walks object keys (``.Name`` or ``['Name']``) and array
positions (``[0]``): ``$.Customer.Id``, ``$.Offer['UniqueOfferId']``,
``$.Offers[0].Name``. Wildcards, filters and slices are refused: a mapping picks one
value.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

_STEP = re.compile(
    r"""\.(?P<name>[A-Za-z_][A-Za-z0-9_\-]*)"""
    r"""|\[(?P<index>\d+)\]"""
    r"""|\['(?P<quoted>(?:[^'\\]|\\.)*)'\]"""
    r"""|\["(?P<dquoted>(?:[^"\\]|\\.)*)"\]"""
)

Step = str | int


class PathError(ValueError):
    """A path that is not in the supported form."""


class Missing(LookupError):
    """The document has no value at a path."""


def parse_path(path: str) -> tuple[Step, ...]:
    """The steps of ``path``; :class:`PathError` names the first character not read."""
    text = path.strip()
    if not text.startswith("$"):
        raise PathError(f"{path!r} must start with '$', e.g. $.Customer.Id")
    steps: list[Step] = []
    position = 1
    while position < len(text):
        match = _STEP.match(text, position)
        if match is None:
            raise PathError(
                f"{path!r} cannot be read from character {position + 1} on "
                f"({text[position:]!r}); use .Name, ['Name'] or [0]"
            )
        steps.append(_step_of(match))
        position = match.end()
    if not steps:
        raise PathError(f"{path!r} names the whole body, not one value")
    return tuple(steps)


def _step_of(match: re.Match[str]) -> Step:
    if match.group("name") is not None:
        return match.group("name")
    if match.group("index") is not None:
        return int(match.group("index"))
    quoted = match.group("quoted")
    if quoted is None:
        quoted = match.group("dquoted")
    return re.sub(r"\\(.)", r"\1", quoted)


def resolve(document: Any, steps: Sequence[Step]) -> Any:
    """The value at ``steps``; :class:`Missing` when the document has none there."""
    value = document
    for step in steps:
        if isinstance(step, int):
            if not isinstance(value, list) or step >= len(value):
                raise Missing(step)
            value = value[step]
        else:
            if not isinstance(value, dict) or step not in value:
                raise Missing(step)
            value = value[step]
    return value
