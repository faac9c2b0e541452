"""Writes docs/coverage.md: every named workflow of diffusers' families (each tiny family module's declarations,
`tests/fixtures/tiny/<family>.py`, which a core test keeps complete against the installed diffusers) with what the
host tier measured on each ComfyUI (`tests/.artifacts/coverage/<host>.json`, written by tests/test_workflows.py):
equal (the workflow node == diffusers' own pipe(), max |diff| <= 1e-5), differs, fails, or not run and why.

    python tools/coverage_table.py     # after: python -m pytest tests/test_workflows.py (on each host)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))

import tiny  # noqa: E402

COVERAGE = ROOT / "tests" / ".artifacts" / "coverage"
OUT = ROOT / "docs" / "coverage.md"


def cell(entry) -> str:
    if entry is None:
        return "not run"
    if entry["outcome"] == "equal":
        shown = f"equal ({entry['max_abs_diff']:.0e})" if entry["max_abs_diff"] else "equal (0)"
        return shown + (", with its sound" if entry.get("with_audio") else "")
    if entry["outcome"] == "differs":
        return f"differs ({entry['max_abs_diff']:.2g})"
    return f"{entry['outcome']}: {entry.get('why', '')[:120]}"


# diffusers' loops on ComfyUI's own models: (family, ComfyUI model classes, status / why not). The bridged ones are
# modular.pipelines.bridge.FAMILIES (checked by tests/test_core_bridge.py against this table).
BRIDGE = [
    ("StableDiffusionXL", "SDXL", "bridged: eps or v prediction on a discrete schedule; the steps and loop with any "
                                  "guider that does not patch diffusers' UNet modules, perturbed attention and smoothed "
                                  "energy (layers named by fqn); text2image, image2image and "
                                  "inpainting from a LATENT; the workflow node on the checkpoint's CLIP and VAE "
                                  "(host tier: == pipe(), with a LoRA, with APG, with PAG, with SEG, made "
                                  "v-prediction by ModelSamplingDiscrete, from VAE latents with and without a noise "
                                  "mask, == SamplerCustomAdvanced euler; the workflow node == its wiring from "
                                  "ComfyUI's nodes)"),
    ("StableDiffusion3", "SD3", "bridged: flow matching with the MODEL's shift; the steps and loop with any guider "
                                "that does not patch diffusers' transformer modules, skip-layer guidance and auto "
                                "guidance with a dropout of 1; "
                                "text2image and image2image; the workflow node on the checkpoint's CLIP and VAE "
                                "(host tier: == pipe(), with APG, with SkipLayerGuidance, with AutoGuidance, from VAE "
                                "latents, == "
                                "SamplerCustomAdvanced euler; "
                                "the MODEL from Load Diffusion Model)"),
    ("Flux", "Flux", "bridged: Flux.1 dev / schnell: flow matching with the MODEL's (exponential) shift, the packed "
                     "latents unpacked for ComfyUI's network, Flux Guidance's value as guidance_scale; text2image "
                     "and image2image; the workflow node on the checkpoint's CLIP and VAE (host tier: == pipe(), from "
                     "VAE latents, == SamplerCustomAdvanced euler, the workflow node == its wiring from ComfyUI's "
                     "nodes; the MODEL from Load Diffusion Model + ModelSamplingFlux)"),
    ("Flux2", "Flux2", "not yet"),
    ("Wan", "WAN21", "bridged: Wan 2.1 text2video (and one Wan 2.2 14B expert at a time: the same network): UniPC on "
                     "flow sigmas with the MODEL's shift (ModelSamplingSD3), video LATENTs (Empty Hunyuan Latent "
                     "Video: num_frames from its length); the steps and loop with any guider that does not patch "
                     "diffusers' transformer modules, and skip-layer guidance; the workflow node on Load CLIP (wan) "
                     "and Load VAE (host tier: == pipe(), with APG, with SkipLayerGuidance; the workflow node == its "
                     "wiring from ComfyUI's nodes; ComfyUI's Wan network carrying the folder's weights). Not yet: "
                     "image2video (a 36-channel MODEL is refused)"),
    ("Wan 2.2 TI2V 5B", "WAN22", "not yet: 48-channel latents, per-token timesteps"),
    ("QwenImage", "QwenImage", "bridged: Qwen-Image text2image: flow matching with the MODEL's shift (ModelSamplingAuraFlow's, "
                               "or its own exponential one), diffusers' packed latents unpacked for ComfyUI's network "
                               "(its [B, 16, 1, H, W] latents), the text embeddings with a mask that keeps them all; "
                               "the steps and loop with any guider that does not patch diffusers' transformer "
                               "modules, and skip-layer guidance (host tier: == pipe(), with APG, with "
                               "SkipLayerGuidance; ComfyUI's Qwen-Image network carrying the folder's weights). Not "
                               "yet: image2image / inpainting / edit, the workflow node on a CLIP and VAE"),
    ("ZImage", "Lumina2", "not yet"),
    ("HunyuanVideo 1.5", "HunyuanVideo", "not yet"),
    ("LTX-2", "LTXAV", "not yet: audio and video latents"),
    ("Cosmos", "CosmosPredict2", "not yet"),
    ("Anima", "Anima", "not yet"),
]


def bridge_lines() -> list[str]:
    lines = ["", "## diffusers' loops on ComfyUI's models (the bridge)", "",
             "Diffusers Pipeline From MODEL takes a ComfyUI MODEL of these families (`model_base` class) as the "
             "family's diffusers pipeline (README: \"diffusers' loops on your checkpoint\"); any other MODEL is refused "
             "by name.", "", "| family | ComfyUI model | status |", "|---|---|---|"]
    return lines + [f"| {family} | {model} | {status} |" for family, model, status in BRIDGE]


def main():
    runs = [json.loads(p.read_text()) for p in sorted(COVERAGE.glob("*.json"))]
    hosts = [f"ComfyUI {r['comfyui']}" for r in runs]
    lines = ["# Coverage: diffusers' named workflows through ComfyUI", "",
             "Generated by `tools/coverage_table.py` from the host tier's runs (`tests/test_workflows.py`): for every",
             "workflow of every family, the family's workflow node (`ModularWorkflow_<Class>`) on a tiny random folder",
             "(`tests/fixtures/tiny/<family>.py`), its images, masks and videos from Load Image / Load Image (as Mask) /",
             "an IMAGE batch, its output through State To Image (a waveform through State To Audio; \"with its sound\":",
             "a video's sound too), against diffusers' own `pipe(**the same call)` of that folder, float32 on the CPU.",
             "`equal`: max |diff| <= 1e-5. \"its chain of nodes too\": the same workflow expanded into step and loop nodes",
             "(Expand into steps) is equal too.",
             "", f"diffusers {runs[0]['diffusers'] if runs else '?'}; hosts: {', '.join(hosts) or 'none run'}.", "",
             "SUMMARY", ""]
    header = ["family", "blocks", "workflow", *hosts] if hosts else ["family", "blocks", "workflow", "result"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    counts = {"workflows": 0, "equal": 0, "families": set(), "equal families": set()}
    for family in tiny.families():
        module = tiny.family(family)
        more = {(spec["blocks"], w): call for spec in getattr(module, "MORE_WORKFLOWS", [])
                for w, call in spec["workflows"].items()}
        for blocks, spec in module.WORKFLOWS.items():
            for workflow, call in spec["workflows"].items():
                counts["workflows"] += 1
                counts["families"].add(family)
                call = more.get((blocks, workflow), call)  # run on a folder of its own
                if isinstance(call, str):
                    cells = [f"not run: {call}"] * max(len(runs), 1)
                else:
                    entries = [r["results"].get(f"{blocks}/{workflow}") for r in runs]
                    cells = [cell(e) + (", its chain of nodes too" if e and e.get("chain") else "") for e in entries]
                    cells = cells or ["not run"]
                    if entries and all(e and e["outcome"] == "equal" for e in entries):
                        counts["equal"] += 1
                        counts["equal families"].add(family)
                lines.append(f"| {family} | {blocks} | {workflow} | " + " | ".join(c.replace("|", "/") for c in cells)
                             + " |")
    lines[lines.index("SUMMARY")] = (f"**{counts['equal']} of {counts['workflows']} workflows equal on every host; "
                                       f"{len(counts['equal families'])} of {len(counts['families'])} families with at "
                                       f"least one.**")
    OUT.write_text("\n".join(lines + bridge_lines()) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}: {counts['equal']}/{counts['workflows']} equal, "
          f"{len(counts['equal families'])}/{len(counts['families'])} families")


if __name__ == "__main__":
    main()
