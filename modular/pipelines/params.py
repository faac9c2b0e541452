"""A diffusers pipeline call's values as parameter specs: diffusers' own blocks take each value of a call once, from
the state (`pipe(num_images_per_prompt=2)` sets it once, every block reads it), and leave many inputs untyped. So
their inputs are read here, not by the core's `input_specs`:
- typed by a literal default, else by diffusers' UI templates of standard parameters (`prompt` is text, `height`
  an int, `output_type` a choice), whose steps and choices they take; the limits are ComfyUI's where its own nodes
  take the same value (`COUNTS`, `HOST_LIMITS`), not a template slider's;
- a widget is *not given* while it holds `options["unset"]` (its declared default, else empty text / 0): the block
  then reads the state's value; a step's seed is unset at -1, a whole call's (a workflow node's) always given;
- images, masks and videos a user gives (`media_kind`: by the templates' types, PIL type hints and names) are the
  host's media sockets (`options["many"]` / `["one"]`: a list, a single image);
- an input that is not one of diffusers' standard parameters a user types is `options["advanced"]`.
"""

from __future__ import annotations

import types
import typing

from ..core import compat
from ..core.params import (SEED_NAME, UNSET, WIDGET_KINDS, ParamSpec, unwrap_optional, declared_options, kind_of)

TEMPLATE_TYPES = {"string": str, "int": int, "float": float, "boolean": bool, "bool": bool, "dropdown": str}
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
CALL_KINDS = ("int", "float", "bool", "str", "seed")  # a value of a pipeline call a user types in a widget
COMMON = ("num_images_per_prompt", "num_videos_per_prompt")  # a batch: common, though diffusers has no template for it
MORE = "more"  # a workflow node's widget for the call's other values (JSON), `more_values`


def shown_on_workflow_node(spec) -> bool:
    """Whether a workflow node shows an input of its call: the common values (not `advanced`) and the media it takes;
    the rest is given in its `more` widget (JSON: `more_values`), or on the chain of nodes it expands into."""
    return not spec.options.get("advanced")


def more_values(specs, more: dict, label: str) -> dict:
    """The call's other values given in a workflow node's `more` widget (`{"name": value}`), checked against what the
    call declares (`specs`: all its inputs): a name it does not take, one shown on the node itself (give it there), a
    value for a socket (a tensor, an image: expand the node into steps and connect it there) or of the wrong type
    are this node's errors, naming the name."""
    from ..core.errors import ConfigError
    from ..core.params import check_value

    if not isinstance(more, dict):
        raise ConfigError(f"{label}: '{MORE}' must be a JSON object of the call's other values, e.g. "
                              f"{{\"clip_skip\": 2}}; got {type(more).__name__}")
    declared = {s.name: s for s in specs}
    problems = []
    for name, value in more.items():
        spec = declared.get(name)
        if spec is None:
            problems.append(f"{name!r}: not a value of this call (it takes {', '.join(sorted(declared))})")
        elif shown_on_workflow_node(spec):
            problems.append(f"{name!r}: set it on the node's own {name} input")
        elif spec.kind not in (*CALL_KINDS, "json"):
            problems.append(f"{name!r}: a {spec.type_name} is not written as JSON: expand the node into steps and "
                            f"connect it to the step that takes {name}")
        elif (reason := check_value(spec, value)) is not None:
            problems.append(f"{name!r}: {reason}")
    if problems:
        raise ConfigError(f"{label}: '{MORE}': " + "; ".join(problems))
    return dict(more)


def call_input_specs(params, templates=None, whole_call=False) -> list[ParamSpec]:
    """Specs for the `InputParam`s of one of diffusers' own blocks (`templates`: its UI templates by name;
    `whole_call`: the inputs of a whole pipeline call, a workflow node's, whose seed is always given: ComfyUI's seed
    widget, 0 by default, with its control after generate, so the same workflow gives the same picture)."""
    specs = []
    for p in params:
        if not p.name:
            continue
        options, hint = declared_options(p), p.type_hint
        if p.name == SEED_NAME:
            kind = "seed"
            if not whole_call:
                options[UNSET] = -1
        else:
            hint, kind, options = _call_value(p, hint, (templates or {}).get(p.name), options)
        specs.append(ParamSpec(name=p.name, kind=kind, type_hint=hint, default=p.default, required=bool(p.required),
                               description=p.description or "", options=options))
    return specs


def entry_specs(entry) -> list[ParamSpec]:
    """The input specs of one of diffusers' own classes (a registry entry: its `loop_inputs` for a loop, else its
    `inputs`); a loop that runs its own blocks also shows the call's values those read (Helios' generator, a
    pyramid's steps) as advanced widgets, for a chain whose earlier steps do not declare them."""
    prototype, templates = entry.prototype, compat.ui_templates()
    params = prototype.loop_inputs if entry.role == "loop" else prototype.inputs
    specs = call_input_specs(params, templates, whole_call=entry.role == "workflow")
    if entry.role == "loop" and entry.default_blocks:
        own, inner = {p.name for p in params}, {}
        for p in prototype.inputs:
            if p.name and p.name not in own:
                inner.setdefault(p.name, p)  # the first block's declaration (a later one may repeat it)
        for spec in call_input_specs(list(inner.values()), templates):
            if spec.kind in CALL_KINDS or (spec.kind == "json" and spec.default is not None):
                spec.options["advanced"] = True
                specs.append(spec)
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
    if (not template and p.name not in COMMON) or (template or {}).get("type") in COMPUTED_TEMPLATES:
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
    hint = unwrap_optional(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [arm for a in typing.get_args(hint) for arm in _arms(a)]
    if typing.get_origin(hint) in (list, tuple):
        return [arm for a in typing.get_args(hint) for arm in _arms(a)]
    return [hint]


def _names_pil(hint) -> bool:
    return any(getattr(a, "__module__", "").startswith("PIL") and getattr(a, "__name__", "") == "Image" for a in _arms(hint))


def accepts_list(hint) -> bool:
    """Whether a hint takes a list (several images): untyped, a list, or a union with a list arm."""
    hint = unwrap_optional(hint)
    if hint is None:
        return True
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(accepts_list(a) for a in typing.get_args(hint))
    return hint is list or typing.get_origin(hint) is list


def accepts_one(hint) -> bool:
    """Whether a hint takes a single value: untyped, a non-list type, or a union with a non-list arm."""
    hint = unwrap_optional(hint)
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
