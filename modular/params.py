"""Block declarations -> host-neutral parameter specs, and value checks against them.

A spec's `kind` says how a host shows the input:
- "int", "float", "bool", "str": a typed widget (type_hint is that builtin, possibly Optional);
- "json": untyped, or a list / tuple / dict type_hint: a text widget parsed as JSON, plus a socket
  that accepts any value;
- "object": any other type_hint (a tensor, a class): a socket only;
- "component": an `expected_components` entry: a socket typed by the component's class.
Widget limits come from `InputParam.metadata` keys "min", "max", "step"; a "choices" list makes a
str input a drop-down of those values.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

WIDGET_KINDS = {int: "int", float: "float", bool: "bool", str: "str"}
JSON_ORIGINS = (list, tuple, dict)
NOT_GIVEN = object()


@dataclass(frozen=True)
class ParamSpec:
    name: str
    kind: str
    type_hint: Any = None
    default: Any = None
    required: bool = False
    description: str = ""
    options: dict = field(default_factory=dict)

    @property
    def type_name(self) -> str:
        return _type_name(self.type_hint)


def _unwrap_optional(hint):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _type_name(hint) -> str:
    if hint is None:
        return "any"
    return getattr(hint, "__name__", None) or str(hint)


def kind_of(hint) -> str:
    hint = _unwrap_optional(hint)
    if hint is None or hint is Any:
        return "json"
    if hint in WIDGET_KINDS:
        return WIDGET_KINDS[hint]
    if hint in JSON_ORIGINS or typing.get_origin(hint) in JSON_ORIGINS:
        return "json"
    return "object"


def input_specs(params) -> list[ParamSpec]:
    """Specs for `InputParam`s; params without a name (kwargs_type groups) have no widget."""
    specs = []
    for p in params:
        if not p.name:
            continue
        meta = p.metadata or {}
        options = {k: meta[k] for k in ("min", "max", "step", "choices") if k in meta}
        specs.append(
            ParamSpec(
                name=p.name,
                kind=kind_of(p.type_hint),
                type_hint=p.type_hint,
                default=p.default,
                required=bool(p.required),
                description=p.description or "",
                options=options,
            )
        )
    return specs


def component_specs(components) -> list[ParamSpec]:
    return [
        ParamSpec(name=c.name, kind="component", type_hint=c.type_hint, description=c.description or "")
        for c in components
        if c.name
    ]


def parse_json_widget(text: str):
    """A JSON widget's text -> value; empty text means "not given"."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return NOT_GIVEN
    if not isinstance(text, str):
        return text
    return json.loads(text)


def check_value(spec: ParamSpec, value) -> str | None:
    """None if `value` fits the declared type_hint, else a short reason. Unknown hints pass."""
    if value is None:
        return None
    hint = _unwrap_optional(spec.type_hint)
    if hint is None or hint is Any:
        return None
    origin = typing.get_origin(hint) or hint
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(origin, type):
        ok = isinstance(value, origin)
    else:
        return None
    if ok:
        return None
    return f"expected {_type_name(hint)}, got {type(value).__name__} {_preview(value)}"


def _preview(value, limit=40):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
