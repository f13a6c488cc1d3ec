"""Rebuild the training work directory from the shipped demo models, to continue training them.

Training state (``$NODEGRAPH_TRAIN_DIR``, default ``~/.cache/nodegraph/train``) is not
committed: it holds optimizer moments and cached latents and is ~100 MB.  The
shipped fp16 files are enough to resume, though, because the exported weights are
the EMA weights every later stage reads:

* ``vae.pt`` gets the checkpoint's ``first_stage_model.*`` (the VAE is finished
  training; the UNet and ControlNet scripts only encode/decode with it);
* ``unet.pt`` gets ``model.diffusion_model.*`` / ``cond_stage_model.transformer.*``
  as both the live and the EMA weights, with no optimizer state and the step count
  recorded in the file's ``nodegraph.training.unet_steps`` metadata.  ``train_unet``
  then starts a fresh optimizer (a new cosine cycle over ``--minutes``) from them.

Weights were rounded to fp16 when exported, so a resumed run is not bit-identical
to one that never stopped; it is the documented way the shipped v1 weights were made
(see training/README.md).

Usage: ``.venv/bin/python -m training.restore [vae] [unet]`` (default: both; never overwrites).
"""

from __future__ import annotations

import sys

import torch
from safetensors import safe_open

from training.common import CHECKPOINT_PATH, WORK, log, work_dir


def _strip(prefix: str) -> dict[str, torch.Tensor]:
    with safe_open(str(CHECKPOINT_PATH), "pt") as f:
        return {k[len(prefix) :]: f.get_tensor(k).float() for k in f.keys() if k.startswith(prefix)}


def _metadata() -> dict[str, str]:
    with safe_open(str(CHECKPOINT_PATH), "pt") as f:
        return f.metadata() or {}


def restore_vae() -> None:
    """vae.pt in train_vae's format (``model`` = the state dict); the only field later stages read."""
    path = WORK / "vae.pt"
    if path.exists():
        log(f"{path} exists; left as it is")
        return
    state = _strip("first_stage_model.")
    torch.save({"model": state, "step": 0, "elapsed": 0.0, "restored_from": CHECKPOINT_PATH.name}, path)
    log(f"wrote {path} ({len(state)} tensors)")


def restore_unet() -> None:
    """unet.pt with live = EMA = shipped weights, no optimizer state (train_unet starts a fresh one)."""
    path = WORK / "unet.pt"
    if path.exists():
        log(f"{path} exists; left as it is")
        return
    meta = _metadata()
    unet = _strip("model.diffusion_model.")
    clip = _strip("cond_stage_model.transformer.")
    steps = int(meta.get("nodegraph.training.unet_steps", "0"))
    torch.save({"unet": unet, "clip": clip, "ema_unet": unet, "ema_clip": clip, "step": steps,
                "elapsed": 0.0, "scaling_factor": float(meta["nodegraph.vae.scaling_factor"]),
                "restored_from": CHECKPOINT_PATH.name}, path)  # fmt: skip
    log(f"wrote {path} (UNet {len(unet)} tensors, text {len(clip)} tensors, step {steps})")


def main(argv: list[str]) -> None:
    work_dir()
    names = argv or ["vae", "unet"]
    for n in names:
        {"vae": restore_vae, "unet": restore_unet}[n]()


if __name__ == "__main__":
    main(sys.argv[1:])
