"""ComfyUI <-> core: socket types, widget specs from `ParamSpec`s, and widget/socket values -> given values.
Pure: imports no ComfyUI."""

from __future__ import annotations

import json

from ..modular import NOT_GIVEN, parse_json_widget
from ..modular.core.params import UNSET
from ..modular.pipelines.params import MIN_SIZE, SIZES
from ..modular.pipelines.media import as_pipeline_media, check_sizes

BLOCK_TYPE = "LOOP_BLOCK"
STATE_TYPE = "PIPELINE_STATE"
PIPELINE_TYPE = "DIFFUSERS_PIPELINE"
GUIDER_TYPE = "DIFFUSERS_GUIDER"
SCHEDULER_TYPE = "DIFFUSERS_SCHEDULER"
LINK_SUFFIX = "_link"


class AnyType(str):
    """ComfyUI's any-type socket: "*", unequal to no type. ComfyUI's own `IO.ANY` is the same string with the
    same `__ne__`, which its validation (0.3.64 and later) relies on; this one needs no ComfyUI import."""

    def __ne__(self, other):
        return False

    __hash__ = str.__hash__


ANY = AnyType("*")
INT_LIMIT = 0xFFFFFFFFFFFFFFFF


def _tooltip(spec, extra=""):
    parts = [spec.description.strip()] if spec.description else []
    parts.append(f"type: {spec.type_name}" + (", required" if spec.required else ""))
    if extra:
        parts.append(extra)
    return "\n".join(parts)


def _number_default(declared, opts, kind):
    """The declared default, else 0 moved into [min, max]: a node must validate as it is added."""
    if declared is not None:
        return kind(declared)
    value = kind(0)
    if opts.get("min") is not None:
        value = max(value, kind(opts["min"]))
    if opts.get("max") is not None:
        value = min(value, kind(opts["max"]))
    return value


SEED_MAX = 0xFFFFFFFFFFFFFFFF  # as KSampler's seed (torch.Generator.manual_seed takes any of them)
MAX_RESOLUTION = 16384  # ComfyUI's nodes.MAX_RESOLUTION, the most its own size widgets take (a host test pins it)


def _unset_text(spec) -> str:
    """The tooltip line that says which widget value means "not given"."""
    if spec.kind == "seed" and UNSET not in spec.options:
        return "The call's seed: torch.Generator().manual_seed(seed), as a diffusers user passes it."
    if UNSET not in spec.options:
        return ""
    unset = spec.options[UNSET]
    if spec.kind == "seed":
        return "A seed for a new torch.Generator; -1: the incoming state's generator."
    shown = "Empty" if unset == "" else f"At {json.dumps(unset)}"
    if spec.default is None:
        return f"{shown}: not given (the incoming state's value, else the block's default)."
    return f"{shown}: not given (the incoming state's value, else {json.dumps(spec.default)}); another value is given."


def widget_entry(spec):
    """The INPUT_TYPES entry of a widget-backed spec, or None for socket-only kinds."""
    opts = dict(spec.options)
    d = opts.get(UNSET, spec.default)
    unset = _unset_text(spec)
    if spec.kind == "int":
        most = opts.get("max", MAX_RESOLUTION if spec.name in SIZES else INT_LIMIT)
        return ("INT", {"default": _number_default(d, opts, int), "min": opts.get("min", -INT_LIMIT), "max": most,
                        "step": opts.get("step", 1), "tooltip": _tooltip(spec, unset)})
    if spec.kind == "float":
        return ("FLOAT", {"default": _number_default(d, opts, float), "min": opts.get("min", -1e9),
                          "max": opts.get("max", 1e9), "step": opts.get("step", 0.01), "round": False,
                          "tooltip": _tooltip(spec, unset)})
    if spec.kind == "bool":
        return ("BOOLEAN", {"default": bool(d), "tooltip": _tooltip(spec, unset)})
    if spec.kind == "str" and opts.get("choices"):
        choices = [str(c) for c in opts["choices"]]
        return (choices, {"default": str(d) if d in choices else choices[0], "tooltip": _tooltip(spec, unset)})
    if spec.kind == "str":
        return ("STRING", {"default": "" if d is None else str(d), "multiline": bool(opts.get("multiline")),
                           "tooltip": _tooltip(spec, unset)})
    if spec.kind == "seed" and UNSET not in opts:  # a whole call's: ComfyUI's seed widget (KSampler's)
        return ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True,
                        "tooltip": _tooltip(spec, unset)})
    if spec.kind == "seed":
        return ("INT", {"default": -1, "min": -1, "max": SEED_MAX, "tooltip": _tooltip(spec, unset)})
    if spec.kind == "json":
        shown = "none" if d is None else json.dumps(d, default=repr)
        hint = (f"JSON. Empty: taken from the incoming state, else the default ({shown}). "
                f"Connecting {spec.name}{LINK_SUFFIX} overrides it.")
        return ("STRING", {"default": "", "placeholder": f"{spec.name} (JSON, default {shown})",
                           "tooltip": _tooltip(spec, hint)})
    return None


def link_sockets(specs, component_specs=()) -> dict[str, str]:
    """{JSON input name: its link socket}: `x` gets `x_link`, unless an input or component of that name is declared."""
    declared = {s.name for s in specs} | {s.name for s in component_specs}
    return {s.name: s.name + LINK_SUFFIX for s in specs
            if s.kind == "json" and s.options.get("link", True) and s.name + LINK_SUFFIX not in declared}


def input_types(specs, component_specs):
    """-> (required, optional) INPUT_TYPES dicts for a block's or loop's declared inputs. An `advanced` spec's
    widget and sockets say so (ComfyUI's frontends from 1.5x tuck them behind "advanced"; older ones show them)."""
    links = link_sockets(specs, component_specs)
    required, optional = {}, {}
    for spec in specs:
        advanced = {"advanced": True} if spec.options.get("advanced") else {}
        entry = widget_entry(spec)
        if entry is not None:
            required[spec.name] = (entry[0], {**entry[1], **advanced})
        if spec.name in links:
            optional[links[spec.name]] = (ANY, {"tooltip": f"Any value for {spec.name}; overrides the widget.", **advanced})
        elif spec.kind == "object":
            optional[spec.name] = (ANY, {"tooltip": _tooltip(spec), **advanced})
        elif spec.kind in MEDIA_TYPES:
            optional[spec.name] = (MEDIA_TYPES[spec.kind], {"tooltip": _tooltip(spec, MEDIA_TIPS[spec.kind]), **advanced})
    for spec in component_specs:
        optional.setdefault(spec.name, (component_type(spec), {"tooltip": _tooltip(spec, "component")}))
    return required, optional


MEDIA_TYPES = {"image": "IMAGE", "mask": "MASK", "video": "IMAGE"}
MEDIA_TIPS = {"image": "An IMAGE (Load Image); a batch gives several where the input takes a list.",
              "mask": "A MASK (1 = the area to change), of the image's size.",
              "video": "Video frames: an IMAGE batch (Load Video, or images), one frame after another."}


def component_type(spec) -> str:
    return spec.type_name.upper() if spec.type_hint is not None else ANY


def json_widget_names(specs) -> list[str]:
    return [s.name for s in specs if s.kind == "json"]


def sized(specs) -> list:
    """The height / width widgets whose 0 means "not given": 0 or a size from MIN_SIZE, which ComfyUI's own min /
    max check cannot say (a node's VALIDATE_INPUTS checks them instead)."""
    return [s for s in specs if s.name in SIZES and s.kind == "int" and s.options.get(UNSET) == 0]


def validated_names(specs) -> list[str]:
    """The inputs a node's VALIDATE_INPUTS checks itself: its JSON widgets and its sizes (`sized`)."""
    return json_widget_names(specs) + [s.name for s in sized(specs)]


def size_errors(specs, kwargs) -> list[str]:
    errors = []
    for spec in sized(specs):
        value = kwargs.get(spec.name)
        most = spec.options.get("max", MAX_RESOLUTION)
        if isinstance(value, int) and value != 0 and not MIN_SIZE <= value <= most:
            errors.append(f"{spec.name}: {value} is not a size: give {MIN_SIZE} to {most}, or 0 for the pipeline's "
                          f"default")
    return errors


def is_unset(spec, value) -> bool:
    """Whether a widget's value means "not given" (`options["unset"]`: a seed's -1, the default of a value of a
    diffusers pipeline call, empty text / 0 where it has no default)."""
    if UNSET not in spec.options:
        return False
    unset = spec.options[UNSET]
    return isinstance(value, bool) == isinstance(unset, bool) and value == unset


def given_values(specs, kwargs, component_specs=(), label: str = "node") -> dict:
    """The values a node gives: typed widgets unless they hold their unset value, JSON widgets when not empty,
    links when connected; media as diffusers takes them (`label` names the node in a conversion's error)."""
    links = link_sockets(specs, component_specs)
    values = {}
    for spec in specs:
        if spec.kind == "json":
            linked = kwargs.get(links[spec.name]) if spec.name in links else None
            if linked is not None:
                values[spec.name] = linked
                continue
            parsed = parse_json_widget(kwargs.get(spec.name))
            if parsed is not NOT_GIVEN:
                values[spec.name] = parsed
        elif spec.name in kwargs and kwargs[spec.name] is not None:
            value = kwargs[spec.name]
            if is_unset(spec, value):
                continue  # not given: the state's value, else the block's default
            values[spec.name] = state_value(spec, value, label)
    kinds = {s.name: s.kind for s in specs if s.kind in MEDIA_TYPES}
    if kinds:
        check_sizes({n: v for n, v in values.items() if n in kinds}, kinds, values, label)
    return values


def state_value(spec, value, label: str = "node"):
    """A ComfyUI value as the block state holds it: a LATENT (`{"samples": tensor, ...}`) connected to a tensor
    input is its `samples` tensor; an IMAGE / MASK on a media input the PIL images diffusers takes
    (`pipelines.media`); anything else is given as it is."""
    if spec.kind == "object" and spec.type_name == "Tensor" and isinstance(value, dict) and "samples" in value:
        return value["samples"]
    if spec.kind in MEDIA_TYPES:
        return as_pipeline_media(spec.kind, value, spec.options.get("many", False), f"{label}, input '{spec.name}'",
                                 one=spec.options.get("one", True))
    return value


def json_errors(specs, kwargs) -> list[str]:
    errors = []
    for name in json_widget_names(specs):
        text = kwargs.get(name)
        if isinstance(text, str):
            try:
                parse_json_widget(text)
            except ValueError as e:
                errors.append(f"{name}: not valid JSON ({e}); write e.g. 0, 1.5, \"text\", [1, 2] or {{\"k\": 1}}")
    return errors
