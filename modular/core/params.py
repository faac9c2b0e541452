"""Block declarations -> host-neutral parameter specs, and value checks against them.

A spec's `kind` says how a host shows the input:
- "int", "float", "bool", "str": a typed widget (type_hint is that builtin, possibly Optional);
- "json": untyped, or a list / tuple / dict type_hint: a text widget parsed as JSON, plus a socket
  that accepts any value;
- "object": any other type_hint (a tensor, a class): a socket only;
- "component": an `expected_components` entry: a socket typed by the component's class;
- "image", "mask", "video": media a user gives one of diffusers' pipelines (`modular.pipelines.params`): a
  host's image, mask or frames socket, converted to what diffusers' image processors take (`pipelines.media`);
  `options["many"]`: the input takes a list (a batch of several images).
- "seed": an input named `generator` (diffusers' name for the random generator): an int seed widget; a
  seed given becomes a seeded CPU `torch.Generator` in the state (`to_state_value`), none given (-1) keeps the
  incoming state's generator.
Widget limits come from `InputParam.metadata` keys "min", "max", "step"; a "choices" list makes a
str input a drop-down of those values. `options["unset"]`: the widget value that means "not given" (the
incoming state's value is used, else the block's own default): -1 for a seed; diffusers' own blocks have more
(`modular.pipelines.params`: a pipeline call's values).
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


def unwrap_optional(hint):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _type_name(hint) -> str:
    if hint is None:
        return "any"
    if typing.get_origin(hint) is not None:  # list[int], X | Y: as written
        return str(hint).replace("typing.", "")
    return getattr(hint, "__name__", None) or str(hint)


def kind_of(hint) -> str:
    hint = unwrap_optional(hint)
    if hint is None or hint is Any:
        return "json"
    if hint in WIDGET_KINDS:
        return WIDGET_KINDS[hint]
    if hint in JSON_ORIGINS or typing.get_origin(hint) in JSON_ORIGINS:
        return "json"
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and all(
            kind_of(arm) == "json" for arm in typing.get_args(hint)):
        return "json"  # `list | tuple` (Echo's sigmas)
    return "object"


SEED_NAME = "generator"
UNSET = "unset"  # options key: the widget value that means "not given"


def declared_options(param) -> dict:
    """A widget's limits and choices as an `InputParam` declares them (its `metadata`: "min", "max", "step",
    "choices")."""
    meta = param.metadata or {}
    return {k: meta[k] for k in ("min", "max", "step", "choices") if k in meta}


def input_specs(params) -> list[ParamSpec]:
    """Specs for `InputParam`s; params without a name (kwargs_type groups) have no widget. An untyped `generator` is a
    seed (-1: not given). diffusers' own blocks are read by `modular.pipelines.params` (a pipeline call's values)."""
    specs = []
    for p in params:
        if not p.name:
            continue
        options = declared_options(p)
        kind = kind_of(p.type_hint)
        if p.name == SEED_NAME and p.type_hint is None:
            kind = "seed"
            options[UNSET] = -1
        specs.append(ParamSpec(name=p.name, kind=kind, type_hint=p.type_hint, default=p.default,
                               required=bool(p.required), description=p.description or "", options=options))
    return specs


def to_state_value(name: str, value):
    """A given value as the block state holds it: a seed given for `generator` is a seeded CPU `torch.Generator`
    (as a diffusers user passes `generator=torch.Generator().manual_seed(seed)`)."""
    if name == SEED_NAME and isinstance(value, int) and not isinstance(value, bool):
        import torch

        return torch.Generator().manual_seed(value)
    return value


def constructor_specs(function) -> list[ParamSpec]:
    """The specs of a constructor's parameters (a guider's `__init__`): a bool, int, float or str default gives that
    widget, anything else a JSON widget (empty: the constructor's default)."""
    import inspect

    specs = []
    for name, p in inspect.signature(function).parameters.items():
        if name == "self" or p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            continue
        default = None if p.default is inspect.Parameter.empty else p.default
        kind = WIDGET_KINDS.get(type(default), "json")
        specs.append(ParamSpec(name, kind, type(default) if kind != "json" else None, default,
                               required=p.default is inspect.Parameter.empty))
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


def check_value(spec, value) -> str | None:
    """None if `value` fits the declared type_hint (of a ParamSpec or an InputParam), else a short reason. Unknown
    hints pass."""
    if value is None:
        return None
    hint = unwrap_optional(spec.type_hint)
    if hint is None or hint is Any:
        return None
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # `X | Y`: what any of them takes
        reasons = [check_value(ParamSpec(spec.name, "object", arm), value) for arm in typing.get_args(hint)]
        if any(reason is None for reason in reasons):
            return None
        return f"expected {_type_name(hint)}, got {type(value).__name__} {_preview(value)}"
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
