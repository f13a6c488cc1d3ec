"""Write the shipped demo-model files from the training scripts' checkpoints.

All files are fp16 safetensors in the layouts real models use, so they go
through the app's ordinary loaders:

* ``checkpoints/nodegraph-shapes-v1.safetensors``: ``model.diffusion_model.*``
  (EMA UNet), ``first_stage_model.*`` (VAE) and
  ``cond_stage_model.transformer.text_model.*`` (EMA text encoder, HF names),
  with the ``nodegraph.*`` metadata of :func:`training.common.checkpoint_metadata`;
* ``controlnet/nodegraph-shapes-mask-controlnet-v1.safetensors``: ``control_model.*``;
* ``upscale_models/nodegraph-shapes-2x-compact-v1.safetensors``: bare ``body.N.*``.

Usage: ``.venv/bin/python -m training.export [checkpoint|controlnet|upscaler ...]`` (default: all
whose training checkpoint exists); ``--out PATH`` writes the checkpoint there instead of the
shipped path (a candidate to grade with ``training.evaluate PATH``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from training.common import (
    CHECKPOINT_PATH,
    CONTROLNET_PATH,
    UNET_CONFIG,
    UPSCALER_PATH,
    WORK,
    checkpoint_metadata,
    load_work,
    log,
)

DESCRIPTION = (
    "nodegraph shapes demo v1: a tiny SD1-layout model (VAE 4x16x16 latents, 3-layer CLIP-style text "
    "encoder on a pruned CLIP vocabulary, cross-attention UNet, v-prediction) trained from scratch on "
    "procedurally generated 64x64 images of one coloured circle/square/triangle/star on a plain "
    "background. Prompts like 'a red circle on a blue background'."
)


def _fp16(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().to(torch.float16).contiguous() for k, v in sd.items()}


def export_checkpoint(path=CHECKPOINT_PATH) -> None:
    vae = load_work(WORK / "vae.pt")["model"]
    s = load_work(WORK / "unet.pt")
    flat = {
        **_fp16(s["ema_unet"], "model.diffusion_model."),
        **_fp16(vae, "first_stage_model."),
        **_fp16(s["ema_clip"], "cond_stage_model.transformer."),
    }
    meta = checkpoint_metadata(s["scaling_factor"], DESCRIPTION)
    meta["nodegraph.training.unet_steps"] = str(s["step"])
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(flat, str(path), metadata=meta)
    path.chmod(0o644)  # package data: readable by everyone (the work folder's umask may be private)
    log(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, UNet step {s['step']})")


def export_controlnet() -> None:
    from training.train_controlnet import HINT

    s = load_work(WORK / "controlnet.pt")
    meta = {
        "nodegraph.controlnet.hint": HINT,
        "nodegraph.controlnet.num_head_channels": str(UNET_CONFIG.num_head_channels),
        "nodegraph.controlnet.base": CHECKPOINT_PATH.name,
        "nodegraph.training.steps": str(s["step"]),
        "nodegraph.description": (
            "ControlNet for nodegraph-shapes-v1: the hint is the object's mask (white object on black, "
            "64x64 RGB); the generated shape is placed and sized like the mask."
        ),
    }
    CONTROLNET_PATH.parent.mkdir(parents=True, exist_ok=True)
    save_file(_fp16(s["model"], "control_model."), str(CONTROLNET_PATH), metadata=meta)
    log(f"wrote {CONTROLNET_PATH} ({CONTROLNET_PATH.stat().st_size / 1e6:.2f} MB)")


def export_upscaler() -> None:
    s = load_work(WORK / "upscaler.pt")
    meta = {"nodegraph.description": "2x SRVGGNetCompact upscaler trained on the nodegraph shapes dataset",
            "nodegraph.training.steps": str(s["step"])}  # fmt: skip
    UPSCALER_PATH.parent.mkdir(parents=True, exist_ok=True)
    save_file(_fp16(s["model"], ""), str(UPSCALER_PATH), metadata=meta)
    log(f"wrote {UPSCALER_PATH} ({UPSCALER_PATH.stat().st_size / 1e6:.2f} MB)")


EXPORTS = {"checkpoint": export_checkpoint, "controlnet": export_controlnet, "upscaler": export_upscaler}
SOURCES = {"checkpoint": "unet.pt", "controlnet": "controlnet.pt", "upscaler": "upscaler.pt"}


def main(argv: list[str]) -> None:
    if "--out" in argv:
        i = argv.index("--out")
        out = Path(argv[i + 1])
        argv = argv[:i] + argv[i + 2 :]
        if argv not in ([], ["checkpoint"]):
            raise SystemExit("--out applies to the checkpoint only")
        export_checkpoint(out)
        return
    names = argv or [n for n, f in SOURCES.items() if (WORK / f).exists()]
    for n in names:
        EXPORTS[n]()


if __name__ == "__main__":
    main(sys.argv[1:])
