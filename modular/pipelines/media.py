"""A host's media as diffusers' pipelines take them, and back.

A host image batch is a float tensor `B, H, W, C` in 0..1 (ComfyUI's IMAGE); a mask batch `B, H, W`, 1 = the area
to change (ComfyUI's MASK); video frames are an image batch, one frame after another. diffusers' image processors
take PIL images, numpy arrays or tensors; its blocks' type hints name PIL images, so that is what they get: 8-bit
RGB images (the host's own rounding when it saves an image, `clip(255 * x)`), masks as 8-bit greyscale images
(255 = repaint, diffusers' convention as the host's), frames as a list of images.
"""

from __future__ import annotations

from ..core.errors import LoopConfigError


def _batch(value, dims: int, what: str, label: str):
    import torch

    if not torch.is_tensor(value) or value.ndim != dims:
        shape = tuple(value.shape) if hasattr(value, "shape") else type(value).__name__
        want = "B, H, W, C" if dims == 4 else "B, H, W"
        raise LoopConfigError(f"{label}: expected {what} ({want}), got {shape}")
    if value.shape[0] == 0:
        raise LoopConfigError(f"{label}: {what} holds no {'frames' if 'frame' in what else 'images'}")
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
        raise LoopConfigError(f"{label}: expected an RGB IMAGE (B, H, W, 3), got {channels} channels, shape "
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
        raise LoopConfigError(f"{label}: takes one {kind}, got a batch of {len(items)}; pick one (e.g. ComfyUI's "
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
                raise LoopConfigError(f"{label}: '{mask}' is {w}x{h}, '{image}' {iw}x{ih}: a mask is of its image's "
                                      f"size ({hint})")
    if not masks:  # without a mask diffusers' image processors resize an image to the size asked, as pipe() does
        return
    want_h, want_w = asked.get("height") or 0, asked.get("width") or 0
    for image, (h, w) in images.items():
        if (want_h and h != want_h) or (want_w and w != want_w):
            raise LoopConfigError(f"{label}: '{image}' is {w}x{h}, but height x width asks {want_w or w}x{want_h or h}: "
                                  f"scale the image (Upscale Image), or leave height / width at 0 to take its size")



AUDIO_NAMES = ("audio", "audios", "sound")  # what diffusers' decoders call a waveform (LTX-2, MiniMax, Cosmos)
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
        raise LoopConfigError(f"{label}: expected a decoded waveform ([B, C, T], [C, T] or [T] floats, output_type "
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
