"""Between a pipeline state and ComfyUI's types: State To Image (images, or a video's frames and its rate), State
To Audio, State To LATENT and LATENT To State. The conversions are `modular.pipelines.media` and `.latents`."""

from __future__ import annotations

from ...modular import ConfigError, copy_state
from ...modular.core import compat
from ...modular.pipelines.latents import from_host_latent, to_host_latent
from ...modular.pipelines.media import (AUDIO_NAMES, IMAGE_NAMES, audio_rate, frame_rate, host_audio, host_frames,
                                         output_key)
from ..state_files import value_named
from ..widgets import PIPELINE_TYPE, STATE_TYPE
from . import CATEGORY

class StateToImage:
    DESCRIPTION = ("The decoded images or video of a pipeline state as a ComfyUI IMAGE. diffusers' decode step "
                   "writes `images` (for Save Image, Preview Image) or, in a video family, `videos`: those come out "
                   "as their frames, one IMAGE batch [frames, H, W, C] (several videos: their frames one after "
                   "another), for Save Animated WEBP or Create Video, with `fps` the family's frame rate (0 for "
                   "stills). Decode with output_type \"pt\", \"np\" or \"pil\".")
    CATEGORY = f"{CATEGORY}"
    RETURN_TYPES = ("IMAGE", "FLOAT")
    RETURN_NAMES = ("image", "fps")
    OUTPUT_TOOLTIPS = ("The images, or a video's frames (an IMAGE batch, float 0..1).",
                       "A video's frame rate: the state's `fps` / `frame_rate`, else the one diffusers declares for "
                       "the family, else the one diffusers' own examples export it at (Wan: 16); 0 for stills.")
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"state": (STATE_TYPE,), "key": ("STRING", {"default": "images", "tooltip": (
            "The state value to convert: `images`, or `videos` for a video family (read also when `images` is "
            "asked and the state has only `videos`).")})}}

    def convert(self, state, key):
        key = output_key(compat.state_values(state), key, IMAGE_NAMES)
        images, video = host_frames(value_named(state, key, "State To Image"), key)
        return (images, frame_rate(state) if video else 0.0)


class StateToAudio:
    DESCRIPTION = ("The decoded audio of a pipeline state as a ComfyUI AUDIO ({\"waveform\": [B, C, T], "
                   "\"sample_rate\"}), for Save Audio, Preview Audio, Create Video. diffusers' decoders write `audio` "
                   "(LTX-2, Echo, MiniMax-H3), `audios` (MiniMax Music) or `sound` (Cosmos); the rate is the state's "
                   "`sampling_rate`, else the pipeline's (its vocoder's output rate): connect the pipeline where the "
                   "state has none.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("audio",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"state": (STATE_TYPE,), "key": ("STRING", {"default": "audio", "tooltip": (
                    "The state value to convert (read also: `audios`, `sound`, when the state has no `audio`).")})},
                "optional": {"pipeline": (PIPELINE_TYPE, {"tooltip": "The pipeline that made it: its audio rate."})}}

    def convert(self, state, key, pipeline=None):
        held = compat.state_values(state)
        key = output_key(held, key, AUDIO_NAMES)
        label = f"State To Audio: '{key}'"
        waveform = host_audio(value_named(state, key, "State To Audio"), label)
        rate = audio_rate(held, pipeline)
        if rate is None:
            raise ConfigError(f"{label}: the state holds no sampling_rate; connect the pipeline that made it")
        return ({"waveform": waveform, "sample_rate": rate},)


class StateToLatent:
    DESCRIPTION = ("The latents of a pipeline state as a ComfyUI LATENT (undoing the pipeline VAE's scaling and "
                   "shift), for VAE Decode, KSampler and every node that takes a LATENT.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"state": (STATE_TYPE,), "pipeline": (PIPELINE_TYPE,)}}

    def convert(self, state, pipeline):
        latents = value_named(state, "latents", "State To LATENT")
        if latents is None:
            raise KeyError("State To LATENT: the state's 'latents' is empty")
        try:
            return ({"samples": to_host_latent(pipeline, latents).detach().cpu()},)
        except ConfigError as e:
            raise ConfigError(f"State To LATENT: {e}") from e


class LatentToState:
    DESCRIPTION = ("A ComfyUI LATENT as the `latents` of a pipeline state (with the pipeline VAE's scaling and "
                   "shift), for diffusers' decode step or loops; into a copy of `state` when one is connected.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (STATE_TYPE,)
    RETURN_NAMES = ("state",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"latent": ("LATENT",), "pipeline": (PIPELINE_TYPE,)}, "optional": {"state": (STATE_TYPE,)}}

    def convert(self, latent, pipeline, state=None):
        new = copy_state(state)
        new.set("latents", from_host_latent(pipeline, latent["samples"]))
        return (new,)

