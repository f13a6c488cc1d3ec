"""Train the demo's TAESD-architecture preview decoder by distilling the demo VAE's decoder.

Inputs are model-space latents (the demo VAE's scaled posterior means of shapes images, as the
sampler sees them), targets are what the real VAE decoder makes of the same latents (clamped
to [-1, 1], mapped to 0..1: TAESD's output range).  A quarter of the set are blends of two
latents, so the decoder also sees the in-between latents an x0 estimate passes through early
in sampling.  The loss is MSE (the PSNR the preview test measures).

The network is TAESD's layout (``nodes/diffusion/models/taesd.py``) made smaller for a 4x VAE:
width 32, blocks (2, 2, 1) -> two x2 upsamplings; saved in fp16, about 0.3 MB.

Usage (resumes from ``$NODEGRAPH_TRAIN_DIR/taesd.pt``; ``--minutes`` counts the whole run)::

    nice -n 10 .venv/bin/python -m training.train_taesd --minutes 10            # whole 16x16 latents
    nice -n 10 .venv/bin/python -m training.train_taesd --minutes 28            # resumed
    nice -n 10 .venv/bin/python -m training.train_taesd --minutes 50 --crop 8 --batch 32   # resumed on crops
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from nodes.diffusion.models.taesd import TAESDConfig, TAESDDecoder
from nodes.diffusion.models.vae import AutoencoderKL
from training.common import (
    CHECKPOINT_PATH,
    DEMO_DIR,
    IMAGE_SIZE,
    VAE_CONFIG,
    WORK,
    Timer,
    images_to_tensor,
    load_work,
    log,
    setup_torch,
    work_dir,
)
from training.shapes import generate_batch

TRAIN_SEED = 4000
CONFIG = TAESDConfig(latent_channels=4, width=32, blocks=(2, 2, 1))
OUT_PATH = DEMO_DIR / "vae_approx" / "nodegraph-shapes-v1_taesd_decoder.safetensors"


def demo_vae() -> AutoencoderKL:
    """The shipped demo VAE with its scaling factor (from the checkpoint's metadata)."""
    from dataclasses import replace

    from safetensors import safe_open

    with safe_open(str(CHECKPOINT_PATH), "pt") as f:
        sf = float((f.metadata() or {})["nodegraph.vae.scaling_factor"])
        state = {k[len("first_stage_model."):]: f.get_tensor(k).float() for k in f.keys()
                 if k.startswith("first_stage_model.")}
    vae = AutoencoderKL(replace(VAE_CONFIG, scaling_factor=sf))
    vae.load_state_dict(state)
    return vae.eval().requires_grad_(False)


def dataset(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(model-space latents [N,4,16,16], VAE-decoded targets in 0..1 [N,3,64,64]); N = n + n // 4 blends.
    Cached in the work folder (building it costs minutes on one thread)."""
    cache = WORK / f"taesd_data_{seed}_{n}.pt"
    if cache.exists():
        d = load_work(cache)
        return d["z"], d["y"]
    z, y = _build(n, seed)
    torch.save({"z": z, "y": y}, cache)
    return z, y


def _build(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    vae = demo_vae()
    b = generate_batch(seed, n, IMAGE_SIZE)
    with torch.no_grad():
        z = torch.cat([vae.encode(images_to_tensor(b.images[i:i + 64])) for i in range(0, n, 64)])
        g = torch.Generator().manual_seed(seed)
        k = n // 4
        a = torch.rand(k, 1, 1, 1, generator=g)
        i, j = torch.randint(0, n, (k,), generator=g), torch.randint(0, n, (k,), generator=g)
        z = torch.cat([z, a * z[i] + (1 - a) * z[j]])
        y = torch.cat([vae.decode(z[s:s + 64]) for s in range(0, len(z), 64)])
    return z, y.clamp(-1, 1).add(1).div(2)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / F.mse_loss(pred.clamp(0, 1), target)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=6.0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--data", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--crop", type=int, default=0, help="train on random latent crops of this side (0: whole)")
    args = ap.parse_args()
    setup_torch(args.threads)
    torch.manual_seed(0)
    work_dir()
    path = WORK / "taesd.pt"
    model = TAESDDecoder(CONFIG)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    timer, step = Timer(), 0
    if path.exists():
        d = load_work(path)
        model.load_state_dict(d["model"])
        opt.load_state_dict(d["opt"])
        for group in opt.param_groups:
            group["lr"] = args.lr
        timer, step = Timer(d["elapsed"]), d["step"]
    log(f"building data ({args.data} images + blends)")
    z, y = dataset(args.data, TRAIN_SEED)
    zv, yv = dataset(256, TRAIN_SEED + 1)  # held out
    log(f"{sum(p.numel() for p in model.parameters())} params; start at step {step}")
    rng = torch.Generator().manual_seed(step)
    while timer.elapsed < args.minutes * 60:
        idx = torch.randint(0, len(z), (args.batch,), generator=rng)
        zb, yb = z[idx], y[idx]
        if args.crop:  # random latent crops (and the matching pixels): same learning, a fraction of the cost
            c, f = args.crop, CONFIG.upscale
            i, j = (int(v) for v in torch.randint(0, z.shape[-1] - c + 1, (2,), generator=rng))
            zb, yb = zb[..., i:i + c, j:j + c], yb[..., i * f:(i + c) * f, j * f:(j + c) * f]
        loss = F.mse_loss(model(zb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 200 == 0:
            with torch.no_grad():
                log(f"step {step} loss {loss.item():.5f} held-out PSNR {psnr(model(zv), yv):.2f} dB "
                    f"({timer.elapsed / 60:.1f} min)")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "elapsed": timer.elapsed, "step": step}, path)
    with torch.no_grad():
        log(f"done: step {step}, held-out PSNR {psnr(model(zv), yv):.2f} dB")
    OUT_PATH.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    meta = {"nodegraph.description": "TAESD-architecture preview decoder for nodegraph-shapes-v1 (distilled "
            "from its VAE decoder, training/train_taesd.py)", "nodegraph.training.steps": str(step)}
    fd, tmp = tempfile.mkstemp(dir=OUT_PATH.parent, suffix=".tmp")
    os.close(fd)
    save_file(tensors, tmp, metadata=meta)
    os.chmod(tmp, 0o644)
    os.replace(tmp, OUT_PATH)
    log(f"wrote {OUT_PATH} ({OUT_PATH.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
