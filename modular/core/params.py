"""Block declarations -> host-neutral parameter specs, and value checks against them.

A spec's `kind` says how a host shows the input:
- "int", "float", "bool", "str": a typed widget (type_hint is that builtin, possibly Optional);
- "json": untyped, or a list / tuple / dict type_hint: a text widget parsed as JSON, plus a socket
  that accepts any value;
- "object": any other type_hint (a tensor, a class): a socket only;
- "component": an `expected_components` entry: a socket typed by the component's class.
- "seed": an input named `generator` (diffusers' name for the random generator): an int seed widget; a
  seed given becomes a seeded CPU `torch.Generator` in the state (`to_state_value`), none given keeps the
  incoming state's generator.
Widget limits come from `InputParam.metadata` keys "min", "max", "step"; a "choices" list makes a
str input a drop-down of those values. `templates` (diffusers' UI templates of standard parameters, e.g.
`prompt` is text, `height` an int from 64) type an untyped input by its name; a typed widget so made
with no declared default gives nothing while empty (text, `options["empty_is_none"]`) or 0 (a number,
`options["zero_is_none"]`): the incoming state's value is used, else the block's own default (diffusers'
`None`: e.g. the pipeline's default height).
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


TEMPLATE_TYPES = {"string": str, "int": int, "float": float, "boolean": bool, "bool": bool}
SEED_NAME = "generator"


def input_specs(params, templates=None, typed_by_default=False) -> list[ParamSpec]:
    """Specs for `InputParam`s; params without a name (kwargs_type groups) have no widget. `typed_by_default`: an
    untyped input whose default is an int, float, bool or str gets that type's widget (diffusers' shipped blocks
    leave many inputs untyped, e.g. `output_type="pil"`), and a typed one with no default at all is a socket:
    it is a value an earlier step writes into the state (`batch_size`), which a widget would always override."""
    specs = []
    for p in params:
        if not p.name:
            continue
        meta = p.metadata or {}
        options = {k: meta[k] for k in ("min", "max", "step", "choices") if k in meta}
        hint, kind = p.type_hint, kind_of(p.type_hint)
        template = (templates or {}).get(p.name)
        if p.name == SEED_NAME and hint is None:
            kind = "seed"
        elif hint is None and typed_by_default and type(p.default) in WIDGET_KINDS:
            hint = type(p.default)
            kind = WIDGET_KINDS[hint]
        elif hint is None and template and template.get("type") in TEMPLATE_TYPES:
            hint = TEMPLATE_TYPES[template["type"]]
            kind = kind_of(hint)
            options = {**{k: template[k] for k in ("min", "max", "step") if k in template}, **options}
            if template.get("display") == "textarea":
                options["multiline"] = True
            if p.default is None and kind == "str":
                options["empty_is_none"] = True
            elif p.default is None and kind in ("int", "float"):
                options.update(zero_is_none=True, min=0)  # 0: not given (the state's value, else diffusers' default)
        if (typed_by_default and kind in WIDGET_KINDS.values() and p.default is None
                and not options.get("empty_is_none") and not options.get("zero_is_none")):
            kind = "object"  # a value an earlier step writes (batch_size, num_inference_steps): a socket, not a widget
        specs.append(
            ParamSpec(
                name=p.name,
                kind=kind,
                type_hint=hint,
                default=p.default,
                required=bool(p.required),
                description=p.description or "",
                options=options,
            )
        )
    return specs


def to_state_value(name: str, value):
    """A given value as the block state holds it: a seed given for `generator` is a seeded CPU `torch.Generator`
    (as a diffusers user passes `generator=torch.Generator().manual_seed(seed)`)."""
    if name == SEED_NAME and isinstance(value, int) and not isinstance(value, bool):
        import torch

        return torch.Generator().manual_seed(value)
    return value


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
