"""Block declarations -> host-neutral parameter specs, and value checks against them.

A spec's `kind` says how a host shows the input:
- "int", "float", "bool", "str": a typed widget (type_hint is that builtin, possibly Optional);
- "json": untyped, or a list / tuple / dict type_hint: a text widget parsed as JSON, plus a socket
  that accepts any value;
- "object": any other type_hint (a tensor, a class): a socket only;
- "component": an `expected_components` entry: a socket typed by the component's class;
- "image", "mask", "video": media a user gives one of diffusers' pipelines (`media_kind`): a host's image,
  mask or frames socket, converted to what diffusers' image processors take (`pipelines.media`);
  `options["many"]`: the input takes a list (a batch of several images).
- "seed": an input named `generator` (diffusers' name for the random generator): an int seed widget; a
  seed given becomes a seeded CPU `torch.Generator` in the state (`to_state_value`), none given (a step's -1)
  keeps the incoming state's generator; a whole call's seed (a workflow node's) is always given.
Widget limits come from `InputParam.metadata` keys "min", "max", "step"; a "choices" list makes a
str input a drop-down of those values. `options["unset"]`: the widget value that means "not given" (the
incoming state's value is used, else the block's own default): -1 for a seed, and for diffusers' own blocks
(`typed_by_default`) their declared default, or empty text / 0 where they declare none. `templates` (diffusers'
UI templates of standard parameters, e.g. `prompt` is text, `height` an int from 64) type those blocks' inputs
by name.
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
    if typing.get_origin(hint) is not None:  # list[int], X | Y: as written
        return str(hint).replace("typing.", "")
    return getattr(hint, "__name__", None) or str(hint)


def kind_of(hint) -> str:
    hint = _unwrap_optional(hint)
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


TEMPLATE_TYPES = {"string": str, "int": int, "float": float, "boolean": bool, "bool": bool, "dropdown": str}
SEED_NAME = "generator"
SIZES = ("height", "width")
MIN_SIZE = 16
# Counts that are 1 or more wherever diffusers reads them (0 images, 0 steps crash or run nothing); the most a
# widget takes, as ComfyUI's own nodes cap them (EmptyLatentImage's batch_size, KSampler's steps).
COUNTS = {"num_images_per_prompt": 4096, "num_videos_per_prompt": 4096, "batch_size": 4096,
          "num_inference_steps": 10000, "num_frames": 10000, "max_sequence_length": 8192}
# ComfyUI's own limits for the values its nodes also take (KSampler's cfg, Apply ControlNet's strength): diffusers'
# UI templates give a slider's range (ControlNet scale to 1, guidance to 30), not what a value may be.
HOST_LIMITS = {"guidance_scale": {"min": 0.0, "max": 100.0}, "controlnet_conditioning_scale": {"min": 0.0, "max": 10.0}}
# UI template types of values a step computes, not ones a user types (`latents`, embeddings): tucked away.
COMPUTED_TEMPLATES = ("latents", "latent", "embeddings", "image_embeds")
UNSET = "unset"  # options key: the widget value that means "not given"
CALL_KINDS = ("int", "float", "bool", "str", "seed")  # a value of a pipeline call a user types in a widget


def input_specs(params, templates=None, typed_by_default=False, whole_call=False) -> list[ParamSpec]:
    """Specs for `InputParam`s; params without a name (kwargs_type groups) have no widget.

    `typed_by_default` (diffusers' own blocks, which take each value of a pipeline call once, from the state, and
    leave many inputs untyped): `_call_value` below. Without it, a widget's value is always given.
    `whole_call`: the inputs of a whole pipeline call (a workflow node, as `pipe(...)`): its seed is always given
    (ComfyUI's seed widget, 0 by default, with its control after generate), so the same workflow gives the same
    picture; a step's seed may be unset (-1: the state's generator, which an earlier step seeded)."""
    specs = []
    for p in params:
        if not p.name:
            continue
        meta = p.metadata or {}
        options = {k: meta[k] for k in ("min", "max", "step", "choices") if k in meta}
        hint, kind = p.type_hint, kind_of(p.type_hint)
        if p.name == SEED_NAME and (hint is None or typed_by_default):
            kind = "seed"
            if not whole_call:
                options[UNSET] = -1
        elif typed_by_default:
            hint, kind, options = _call_value(p, hint, (templates or {}).get(p.name), options)
        specs.append(ParamSpec(name=p.name, kind=kind, type_hint=hint, default=p.default, required=bool(p.required),
                               description=p.description or "", options=options))
    return specs


def _call_value(p, hint, template, options):
    """(type hint, kind, options) of an input of one of diffusers' blocks, a value of the pipeline call that every
    block reads from the state (diffusers' `pipe(num_images_per_prompt=2)` sets it once):
    - typed by its literal default where it has no type (`output_type="pil"` is a str), else by diffusers' UI
      template of that name (`prompt` is text, `height` an int from 64, `output_type` a choice), whose limits,
      step and choices it takes;
    - a widget that is *not given* while it holds `options["unset"]`: its declared default (the block then reads
      the state's value, else applies that same default), or, with no default, empty text / 0 (the state's value,
      else diffusers' `None`: e.g. the pipeline's default height); any other value is given, and overrides the
      state's from that node on;
    - a typed input with no default and no template is a socket: a value an earlier step writes (`batch_size`),
      except text, a text box (empty: not given);
    - counts are 1 or more (`COUNTS`), other ints with a default of 0 or more are not negative;
    - an input with no UI template (not one of diffusers' standard parameters) is `options["advanced"]`: a host
      may tuck it away."""
    if not template or template.get("type") in COMPUTED_TEMPLATES:
        options["advanced"] = True  # not one of diffusers' standard parameters a user gives: behind "advanced"
    template = template or {}
    media = media_kind(p.name, hint, template) if type(p.default) not in WIDGET_KINDS else None
    if media is not None:
        options.pop("advanced", None)  # what a user gives a pipeline: an image, a mask, a video
        options["many"] = media != "video" and accepts_list(hint)
        options["one"] = media != "video" and accepts_one(hint)
        return hint, media, options
    if hint is None and type(p.default) in WIDGET_KINDS:
        hint = type(p.default)
    elif hint is None and template.get("type") in TEMPLATE_TYPES:
        hint = TEMPLATE_TYPES[template["type"]]
    kind = kind_of(hint)
    if kind not in WIDGET_KINDS.values():
        return hint, kind, options
    if kind in ("int", "float") and template.get("type") in ("int", "float"):
        options = {**{k: template[k] for k in ("min", "max", "step") if k in template}, **options}
    options.update(HOST_LIMITS.get(p.name, {}) if kind in ("int", "float") else {})
    if kind == "str" and template.get("type") == "dropdown" and "choices" not in options:
        options["choices"] = list(template.get("options") or []) or None
    if template.get("display") == "textarea":
        options["multiline"] = True
    if kind == "int" and p.name in SIZES:  # ComfyUI's own least size (EmptyLatentImage), not a template's 64
        options["min"] = min(options.get("min", MIN_SIZE), MIN_SIZE)
    if kind == "int" and p.name in COUNTS:
        options = {**options, "min": 1, "max": COUNTS[p.name]}  # ComfyUI's (KSampler's steps), not a slider's
    elif kind == "int" and isinstance(p.default, int) and p.default >= 0:
        options.setdefault("min", 0)
    if p.default is not None:
        options[UNSET] = p.default
    elif kind == "str":  # text (with no template: free text, e.g. MiniMax Music's lyrics); empty: not given
        options[UNSET] = ""
        if not template:
            options["multiline"] = True
    elif template and kind in ("int", "float"):
        options[UNSET] = 0 if kind == "int" else 0.0
        options["min"] = min(options.get("min", 0), 0)  # 0: not given
    else:
        return hint, "object", options
    if not options.get("choices"):
        options.pop("choices", None)
    return hint, kind, options


def _arms(hint) -> list:
    """The types a hint names: the arms of a union, the element type of a list, in order."""
    hint = _unwrap_optional(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [arm for a in typing.get_args(hint) for arm in _arms(a)]
    if typing.get_origin(hint) in (list, tuple):
        return [arm for a in typing.get_args(hint) for arm in _arms(a)]
    return [hint]


def _names_pil(hint) -> bool:
    return any(getattr(a, "__module__", "").startswith("PIL") and getattr(a, "__name__", "") == "Image" for a in _arms(hint))


def accepts_list(hint) -> bool:
    """Whether a hint takes a list (several images): untyped, a list, or a union with a list arm."""
    hint = _unwrap_optional(hint)
    if hint is None:
        return True
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(accepts_list(a) for a in typing.get_args(hint))
    return hint is list or typing.get_origin(hint) is list


def accepts_one(hint) -> bool:
    """Whether a hint takes a single value: untyped, a non-list type, or a union with a non-list arm."""
    hint = _unwrap_optional(hint)
    if hint is None:
        return True
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(accepts_one(a) for a in typing.get_args(hint))
    return not (hint is list or typing.get_origin(hint) is list)


def media_kind(name: str, hint, template: dict | None = None) -> str | None:
    """"image", "mask" or "video" for an input a user gives a pipeline as media, by diffusers' own words: its UI
    template's type (`image`, `video`), or a type hint naming PIL images (a list of them for a video's frames, a
    name with "mask" for a mask); an untyped `mask_image` is a mask, an untyped `video` / `..._video` a video,
    untyped or `list` `images` / `..._images` images.
    None for anything else."""
    kind = (template or {}).get("type")
    video_name = name == "video" or name.endswith("_video")
    if kind == "video" or (_names_pil(hint) and "video" in name) or (hint is None and video_name):
        return "video"
    if ((hint is None or hint is list) and (name == "images" or name.endswith("_images"))
            and not name.startswith("num_")):  # Echo's memory_images
        return "image"
    if kind == "image" or _names_pil(hint) or (hint is None and name.endswith("_image") and "mask" in name):
        return "mask" if "mask" in name else "image"
    return None


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


def check_value(spec, value) -> str | None:
    """None if `value` fits the declared type_hint (of a ParamSpec or an InputParam), else a short reason. Unknown
    hints pass."""
    if value is None:
        return None
    hint = _unwrap_optional(spec.type_hint)
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
