"""Paths into a spec document, as a search space names them: ``training.learningRate``,
``model.layers[0].units``, ``model.builder.args.width``.

A path is dot-separated camelCase keys, each optionally followed by one ``[index]`` into a
list. :func:`set_path` writes a value into a plain (JSON-like) document; the spec models
then validate the result, so a path naming no field, or a value that does not fit it,
fails with the models' own message.
"""

from __future__ import annotations

import copy
import re
from typing import Any

_SEGMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\[([0-9]+)\])?$")


class PathError(ValueError):
    """A path that is malformed or does not lead into the document."""


def parse_path(path: str) -> list[str | int]:
    """``"model.layers[0].units"`` -> ``["model", "layers", 0, "units"]``."""
    steps: list[str | int] = []
    for segment in path.split("."):
        match = _SEGMENT.match(segment)
        if match is None:
            raise PathError(
                f"{path!r} is not a path like training.learningRate or model.layers[0].units"
            )
        steps.append(match.group(1))
        if match.group(2) is not None:
            steps.append(int(match.group(2)))
    return steps


def set_path(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``document`` with ``value`` at ``path``.

    Every step but the last must exist (an object, or a list long enough); the last
    key may be new (the models then say whether the field exists).
    """
    out = copy.deepcopy(document)
    steps = parse_path(path)
    node: Any = out
    for i, step in enumerate(steps[:-1]):
        where = _render(steps[: i + 1])
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                size = len(node) if isinstance(node, list) else 0
                raise PathError(f"{path}: {where} is out of range (the list has {size} items)")
            node = node[step]
        else:
            if not isinstance(node, dict) or step not in node:
                raise PathError(f"{path}: {where} is not set in the spec")
            node = node[step]
    last = steps[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise PathError(f"{path}: {_render(steps)} is out of range")
        node[last] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise PathError(f"{path}: {_render(steps[:-1])} is not an object")
    return out


def _render(steps: list[str | int]) -> str:
    text = ""
    for step in steps:
        text += f"[{step}]" if isinstance(step, int) else ("." if text else "") + step
    return text
