"""Writes the diffusers example workflows (example_workflows/diffusers_*.json) from graphs built here, with the
node definitions of a running ComfyUI that has the pack (for the widget order): a developer's tool, not shipped.

    python tools/make_diffusers_examples.py --url http://127.0.0.1:8188
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.comfy_client import ComfyClient, Graph, api_to_ui  # noqa: E402

PROMPT = "a photo of an astronaut riding a horse on the moon, highly detailed"
NEGATIVE = "blurry, low quality"
SDXL, SD3 = "StableDiffusionXL", "StableDiffusion3"


def defaults(info, cls, **inputs):
    """The node's required widget defaults, with `inputs` on top."""
    required = info[cls]["input"].get("required", {})
    return {**{k: (v[1].get("default", v[0][0] if isinstance(v[0], list) else None) if len(v) > 1 else None)
               for k, v in required.items()}, **inputs}


def step(g, info, family, name, **inputs):
    cls = f"ModularStep_{family}{name}"
    return g.node(cls, **defaults(info, cls, **inputs))


def sdxl(info, guider=None):
    g = Graph()
    pipe = g.node("ModularDiffusersLoader", folder="stable-diffusion-xl-base-1.0", dtype="default")
    text = step(g, info, SDXL, "TextEncoderStep", pipeline=pipe, prompt=PROMPT, negative_prompt=NEGATIVE)
    state = step(g, info, SDXL, "InputStep", state=text)
    state = step(g, info, SDXL, "SetTimestepsStep", state=state, pipeline=pipe, num_inference_steps=30)
    state = step(g, info, SDXL, "PrepareLatentsStep", state=state, pipeline=pipe, height=1024, width=1024, generator=0)
    state = step(g, info, SDXL, "PrepareAdditionalConditioningStep", state=state, pipeline=pipe)
    loop_cls = "ModularLoop_StableDiffusionXLDenoiseStep"
    loop = g.node(loop_cls, **defaults(info, loop_cls), state=state, pipeline=pipe)
    if guider:
        loop.set(guider=g.node(guider, **defaults(info, guider)))
    decoded = step(g, info, SDXL, "DecodeStep", state=loop, pipeline=pipe, output_type="pt")
    image = g.node("ModularStateToImage", state=decoded, key="images")
    g.node("SaveImage", images=image, filename_prefix="modular_loops_sdxl")
    return g


def sd3(info):
    g = Graph()
    pipe = g.node("ModularDiffusersLoader", folder="stable-diffusion-3-medium-diffusers", dtype="default")
    state = step(g, info, SD3, "TextEncoderStep", pipeline=pipe, prompt=PROMPT, negative_prompt=NEGATIVE)
    state = step(g, info, SD3, "TextInputStep", state=state)
    state = step(g, info, SD3, "PrepareLatentsStep", state=state, pipeline=pipe, height=1024, width=1024, generator=0)
    state = step(g, info, SD3, "SetTimestepsStep", state=state, pipeline=pipe, num_inference_steps=28)
    loop_cls = "ModularLoop_StableDiffusion3DenoiseStep"
    loop = g.node(loop_cls, **defaults(info, loop_cls), state=state, pipeline=pipe)
    decoded = step(g, info, SD3, "DecodeStep", state=loop, pipeline=pipe, output_type="pt")
    image = g.node("ModularStateToImage", state=decoded, key="images")
    g.node("SaveImage", images=image, filename_prefix="modular_loops_sd3")
    return g


def layout(g):
    """Left to right in graph order, two rows: the loader and steps on top, the loop and what follows below."""
    positions, x, row = {}, 40, 0
    for nid, node in g.nodes.items():
        if node.class_type.startswith("ModularLoop_"):
            x, row = 40, 1
        positions[nid] = [x, 60 + 500 * row]
        x += 400
    return positions


EXAMPLES = {
    "diffusers_sdxl_txt2img": lambda info: sdxl(info),
    "diffusers_sdxl_guider": lambda info: sdxl(info, "ModularGuider_AdaptiveProjectedGuidance"),
    "diffusers_sd3_txt2img": sd3,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8188")
    parser.add_argument("--out", default=str(ROOT / "example_workflows"))
    args = parser.parse_args()
    info = ComfyClient(args.url).object_info()
    for name, build in EXAMPLES.items():
        g = build(info)
        workflow = api_to_ui(g, info, positions=layout(g))
        Path(args.out, f"{name}.json").write_text(json.dumps(workflow, indent=1) + "\n")
        print(f"wrote {name}.json ({len(g.nodes)} nodes)")


if __name__ == "__main__":
    main()
