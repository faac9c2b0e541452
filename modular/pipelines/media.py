"""A host's media as diffusers' pipelines take them, and back.

A host image batch is a float tensor `B, H, W, C` in 0..1 (ComfyUI's IMAGE); a mask batch `B, H, W`, 1 = the area
to change (ComfyUI's MASK); video frames are an image batch, one frame after another. diffusers' image processors
take PIL images, numpy arrays or tensors; its blocks' type hints name PIL images, so that is what they get: 8-bit
RGB images (the host's own rounding when it saves an image, `clip(255 * x)`), masks as 8-bit greyscale images
(255 = repaint, diffusers' convention as the host's), frames as a list of images.
"""

from __future__ import annotations

from ..core.errors import ConfigError


def _batch(value, dims: int, what: str, label: str):
    import torch

    if not torch.is_tensor(value) or value.ndim != dims:
        shape = tuple(value.shape) if hasattr(value, "shape") else type(value).__name__
        want = "B, H, W, C" if dims == 4 else "B, H, W"
        raise ConfigError(f"{label}: expected {what} ({want}), got {shape}")
    if value.shape[0] == 0:
        raise ConfigError(f"{label}: {what} holds no {'frames' if 'frame' in what else 'images'}")
    return value


def to_pil_images(images, label: str) -> list:
    """A host image batch (B, H, W, 3 in 0..1) as a list of B RGB PIL images."""
    import numpy as np
    import torch
    from PIL import Image

    images = _batch(images, 4, "an image batch", label)
    channels = images.shape[-1]
    if channels != 3:
        hint = " (RGBA: Load Image gives the alpha as its MASK)" if channels == 4 else ""
        raise ConfigError(f"{label}: expected an RGB IMAGE (B, H, W, 3), got {channels} channels, shape "
                              f"{tuple(images.shape)}{hint}")
    pixels = (images.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return [Image.fromarray(np.ascontiguousarray(p), "RGB") for p in pixels]


def to_pil_masks(masks, label: str) -> list:
    """A host mask batch (B, H, W; 1 = change; or one H, W mask) as a list of B greyscale PIL images (255 = change)."""
    import numpy as np
    import torch
    from PIL import Image

    if hasattr(masks, "ndim") and masks.ndim == 2:
        masks = masks[None]
    masks = _batch(masks, 3, "a mask batch", label)
    pixels = (masks.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return [Image.fromarray(np.ascontiguousarray(p), "L") for p in pixels]


def as_pipeline_media(kind: str, value, many: bool, label: str, one: bool = True):
    """A host value for an input of media `kind` ("image", "mask", "video"): PIL images; a batch of one is one image
    where the input takes one (`one`: untyped, `Image`, `Image | list[Image]`, as a diffusers user passes it),
    else a list where it takes several (`many`); a video's frames as a list."""
    if kind == "video":
        return to_pil_images(_batch(value, 4, "video frames", label), label)
    items = to_pil_masks(value, label) if kind == "mask" else to_pil_images(value, label)
    if one and len(items) == 1:
        return items[0]
    if many:
        return items
    if len(items) != 1:
        raise ConfigError(f"{label}: takes one {kind}, got a batch of {len(items)}; pick one (e.g. ComfyUI's "
                              f"ImageFromBatch)")
    return items[0]


def _empty(masks) -> bool:
    """Whether a mask (a PIL image, or a list of them) marks nothing to change."""
    return all(m.getextrema()[1] == 0 for m in (masks if isinstance(masks, list) else [masks]))


def check_sizes(media: dict, kinds: dict, asked: dict, label: str):
    """Before anything runs: the masks given with images are of their size, and, where a mask is given, images given
    with an explicit `height` / `width` (`asked`, 0 or absent: not asked) are of that size (the mask must line up
    with the picture that comes out; reference and image-to-image images are resized by diffusers, as pipe() does). `media`: name -> PIL image(s) as
    `as_pipeline_media` made them; `kinds`: name -> "image" / "mask" / "video"."""
    def size(value):
        first = value[0] if isinstance(value, list) else value
        return first.size[1], first.size[0]  # PIL: (width, height)

    images = {n: size(v) for n, v in media.items() if kinds.get(n) in ("image", "video") and v}
    masks = {n: size(v) for n, v in media.items() if kinds.get(n) == "mask" and v}
    for mask, (h, w) in masks.items():
        for image, (ih, iw) in images.items():
            if (h, w) != (ih, iw):
                hint = (f"scale the mask to {iw}x{ih}: Resize Image/Mask (ComfyUI 0.33 and later) takes a MASK, or "
                        f"Convert Mask to Image -> Upscale Image -> Convert Image to Mask" if not _empty(media[mask])
                        else "it is empty: Load Image gives an empty 64x64 mask for an image without alpha; paint the "
                             "area to change in Load Image's mask editor")
                raise ConfigError(f"{label}: '{mask}' is {w}x{h}, '{image}' {iw}x{ih}: a mask is of its image's "
                                      f"size ({hint})")
    if not masks:  # without a mask diffusers' image processors resize an image to the size asked, as pipe() does
        return
    want_h, want_w = asked.get("height") or 0, asked.get("width") or 0
    for image, (h, w) in images.items():
        if (want_h and h != want_h) or (want_w and w != want_w):
            raise ConfigError(f"{label}: '{image}' is {w}x{h}, but height x width asks {want_w or w}x{want_h or h}: "
                                  f"scale the image (Upscale Image), or leave height / width at 0 to take its size")



AUDIO_NAMES = ("audio", "audios", "sound")  # what diffusers' decoders call a waveform (LTX-2, MiniMax, Cosmos)
IMAGE_NAMES = ("images", "videos")  # what they call decoded pictures (a video family's decoder writes `videos`)


def output_key(held: dict, key: str, names: tuple) -> str:
    """The state value a converter reads: `key`; where `key` is the first of diffusers' `names` for that output and
    the state has none, the first of the others it holds (a video family's `videos` for `images`)."""
    if key == names[0] and held.get(key) is None:
        return next((k for k in names if held.get(k) is not None), key)
    return key
RATE_NAMES = ("sampling_rate", "sample_rate", "audio_sampling_rate")  # what they call its rate, in a state


def host_audio(value, label: str):
    """A decoded waveform as a host's audio batch: a float32 CPU tensor [B, C, T] (diffusers' decoders give
    [B, C, T], Cosmos' sound [C, T], as a tensor or a numpy array). Anything else names `label` and the value."""
    import numpy as np
    import torch

    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not torch.is_tensor(value) or value.ndim not in (1, 2, 3) or value.shape[-1] == 0 or not value.is_floating_point():
        shape = list(value.shape) if hasattr(value, "shape") else type(value).__name__
        raise ConfigError(f"{label}: expected a decoded waveform ([B, C, T], [C, T] or [T] floats, output_type "
                              f"pt or np), got {shape}")
    while value.ndim < 3:
        value = value[None]
    return value.detach().float().cpu().contiguous()


def audio_rate(values: dict, pipeline) -> int | None:
    """The rate of a state's waveform: the state's own (`sampling_rate`, as Cosmos' and MiniMax-H3's decoders write
    it); else the pipeline's vocoder's output rate (LTX-2, Echo: their vocoders resample), else the rate the
    pipeline says it makes (`sampling_rate`, `audio_sampling_rate`); None when nothing says."""
    for name in RATE_NAMES:
        rate = values.get(name)
        if isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate > 0:
            return int(rate)
    config = getattr(getattr(pipeline, "vocoder", None), "config", None)
    for source, names in ((config, ("output_sampling_rate", "sampling_rate")), (pipeline, RATE_NAMES)):
        for name in names:
            rate = getattr(source, name, None) if source is not None else None
            if isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate > 0:
                return int(rate)
    return None


# --- decoded images and videos, out ------------------------------------------------------------------


def _is_pil(value) -> bool:
    return hasattr(value, "convert") and hasattr(value, "mode") and hasattr(value, "size")


def _described(value) -> str:
    if hasattr(value, "shape"):
        name = type(value).__name__
        return f"{'an' if name[0] in 'aeiou' else 'a'} {name} of shape {list(value.shape)}"
    if isinstance(value, (list, tuple)):
        inner = {_described(v) for v in value[:3]}
        return f"a {type(value).__name__} of {len(value)}" + (f" ({'; '.join(sorted(inner))}, ...)" if inner else "")
    return f"a {type(value).__name__}"


def host_frames(value, key="images", label="State To Image"):
    """-> (host image batch, is_video). diffusers' decoders give, by output_type: images as a [B, C, H, W] tensor ("pt"), a
    [B, H, W, C] array ("np") or a list of PIL images ("pil"); videos (a VideoProcessor's `postprocess_video`) as a
    [B, F, C, H, W] tensor, a [B, F, H, W, C] array or a list of B lists of F PIL frames (or a list of one
    [F, C, H, W] tensor / [F, H, W, C] array per video). All become a float32 [N, H, W, C] tensor in 0..1 on the
    CPU: the images, or every video's frames one after another (ComfyUI's video convention). Anything else, and a
    video of 0 frames, is a ValueError naming the node, the value and its shape."""
    import numpy as np
    import torch

    def refuse(why):
        raise ValueError(
            f"{label}: '{key}' holds {_described(value)}, {why}. It takes decoded images ([B, C, H, W] tensor, "
            f"[B, H, W, C] array, PIL images) or videos ([B, F, C, H, W] tensor, [B, F, H, W, C] array, lists of PIL "
            f"frames) with 1, 3 or 4 channels: connect the decode step's state (output_type pt, np or pil)")

    def from_pil(images):
        return torch.from_numpy(np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images]))

    def frames(array, video: bool, batched: bool):
        """[N, H, W, C] of one array / tensor; `video`: it holds frames ([.., F, ...]); `batched`: a leading batch."""
        channels_last = isinstance(array, np.ndarray)
        if channels_last:
            scale = 255.0 if np.issubdtype(array.dtype, np.integer) else 1.0
            array = torch.from_numpy(np.ascontiguousarray(array)).float() / scale
        array = array.detach().float().cpu()
        if not channels_last:
            array = array.movedim(-3, -1)
        lead = array.shape[:-3]
        if len(lead) != int(video) + int(batched) or array.shape[-1] not in (1, 3, 4):
            refuse("neither images nor video frames")
        if video and (array.shape[-4] == 0):
            refuse("a video of 0 frames")
        if 0 in array.shape:
            refuse("no images")
        return array.reshape(-1, *array.shape[-3:])

    tensor_like = (np.ndarray, torch.Tensor)
    if _is_pil(value):
        return from_pil([value]), False
    if isinstance(value, tensor_like):
        if value.ndim not in (3, 4, 5):
            refuse("neither images nor video frames")
        return frames(value, video=value.ndim == 5, batched=value.ndim > 3).contiguous(), value.ndim == 5
    if isinstance(value, (list, tuple)) and value:
        if all(_is_pil(v) for v in value):
            return from_pil(value), False
        if all(isinstance(v, (list, tuple)) and all(_is_pil(f) for f in v) for v in value):
            if not all(value):
                refuse("a video of 0 frames")
            return from_pil([f for v in value for f in v]), True
        if all(isinstance(v, tensor_like) and v.ndim in (3, 4) for v in value):
            video = value[0].ndim == 4
            if any(v.ndim != value[0].ndim for v in value):
                refuse("a mix of images and videos")
            parts = [frames(v, video=video, batched=False) for v in value]
            if len({tuple(p.shape[1:]) for p in parts}) > 1:
                refuse("images or videos of different sizes")
            return torch.cat(parts).contiguous(), video
    if isinstance(value, (list, tuple)):
        refuse("no images" if not value else "neither images nor video frames")
    refuse("not decoded images")



def frame_rate(state) -> float:
    """The frame rate of the video a state holds: the state's own `fps` / `frame_rate` (what the run was given);
    else the family's (`scan.family_frame_rate`, as the start read it) for the family of the loop that made the
    state; else diffusers' `export_to_video` default."""
    import inspect

    from diffusers.utils import export_to_video

    from ..core import compat
    from .scan import FRAME_RATE_NAMES, shipped

    for name in FRAME_RATE_NAMES:
        value = compat.state_values(state).get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    found = shipped()
    family = {c.name: c.family for c in found.classes if c.role == "loop"}.get(compat.made_by(state).get("loop"))
    rate = found.frame_rates.get(family)
    return float(rate or inspect.signature(export_to_video).parameters["fps"].default)  # 10 in diffusers 0.42.1
