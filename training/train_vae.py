"""Train the demo VAE (64x64 RGB <-> 4x16x16 latents) on the shapes dataset.

Loss: MSE on pixels, with pixels near the object's outline weighted up
(:data:`EDGE_WEIGHT`), plus MSE on horizontal/vertical image differences.
(Two first runs with L1 at lr 2e-3 collapsed to a two-colour output for 600
steps; on an 8-image overfit check MSE at lr 3e-4 cut the error 5x faster.)
Flat colour fields are easy; what a tiny autoencoder loses first are the
corners of squares and the arms of stars, and those live entirely on the
outline, so that is where the loss looks.  The KL term is tiny
(:data:`KL_WEIGHT`): it only keeps latents bounded, the diffusion model does
not need a Gaussian-shaped latent space, and the scaling factor measured
afterwards normalises the latents' spread.

Usage (resumes from ``$NODEGRAPH_TRAIN_DIR/vae.pt`` if present)::

    .venv/bin/python -m training.train_vae --steps 6000
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from nodes.diffusion.models.vae import AutoencoderKL
from training.checker import check
from training.common import (
    IMAGE_SIZE,
    VAE_CONFIG,
    WORK,
    Timer,
    images_to_tensor,
    load_work,
    log,
    outline_ring,
    setup_torch,
    work_dir,
)
from training.shapes import generate_batch

TRAIN_SEED = 1000  # generate_batch seed of the training images
VAL_SEED = 9001  # held-out images for the shape-accuracy check
EDGE_WEIGHT = 4.0
GRAD_WEIGHT = 0.5
KL_WEIGHT = 1e-6


def edge_weights(masks: np.ndarray) -> torch.Tensor:
    """1 + EDGE_WEIGHT on pixels within ~2 px of the object's outline."""
    return 1.0 + EDGE_WEIGHT * outline_ring(masks)


def grad_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    dx = (a[..., :, 1:] - a[..., :, :-1]) - (b[..., :, 1:] - b[..., :, :-1])
    dy = (a[..., 1:, :] - a[..., :-1, :]) - (b[..., 1:, :] - b[..., :-1, :])
    return dx.pow(2).mean() + dy.pow(2).mean()


def vae_loss(vae: AutoencoderKL, x: torch.Tensor, w: torch.Tensor, gen: torch.Generator):
    mean, logvar = vae.encode_moments(x)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=gen)
    rec = vae.decoder(vae.post_quant_conv(z))
    mse = ((rec - x).pow(2) * w).mean()
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
    return mse + GRAD_WEIGHT * grad_mse(rec, x) + KL_WEIGHT * kl, (rec - x).abs().mean()


@torch.no_grad()
def shape_accuracy(vae: AutoencoderKL, n: int = 200) -> dict[str, float]:
    """Share of held-out reconstructions whose checker verdict matches the sample."""
    vae.eval()
    b = generate_batch(VAL_SEED, n, IMAGE_SIZE)
    out = []
    for i in range(0, n, 50):
        x = images_to_tensor(b.images[i : i + 50])
        mean, _ = vae.encode_moments(x)
        rec = vae.decoder(vae.post_quant_conv(mean))
        out.append(((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    rec_img = np.concatenate(out)
    ok = {"shape": 0, "color": 0, "background": 0}
    for img, attrs in zip(rec_img, b.attrs, strict=True):
        v = check(img)
        ok["shape"] += v.shape == attrs["shape"]
        ok["color"] += v.object_color == attrs["color"]
        ok["background"] += v.background_color == attrs["background"]
    vae.train()
    return {k: c / n for k, c in ok.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--minutes", type=float, default=0.0,
                    help="wall-time budget; the LR schedule then follows max(step, time) progress")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--data", type=int, default=24000, help="training images (generated once, cached)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    setup_torch(args.threads)
    work_dir()

    data_path = WORK / f"vae_data_{TRAIN_SEED}_{args.data}.npz"
    if data_path.exists():
        d = np.load(data_path)
        images, masks = d["images"], d["masks"]
    else:
        log(f"generating {args.data} training images")
        b = generate_batch(TRAIN_SEED, args.data, IMAGE_SIZE)
        images, masks = b.images, b.masks
        np.savez(data_path, images=images, masks=masks)

    torch.manual_seed(args.seed)
    vae = AutoencoderKL(VAE_CONFIG)
    with torch.no_grad():
        # Start the posterior nearly deterministic: with LDM's init (logvar ~ 0) the decoder
        # first sees unit noise drowning a tiny mean and sits at "predict grey" for hundreds of
        # steps until the encoder has learnt to shrink the variance.
        vae.quant_conv.bias[VAE_CONFIG.embed_dim :].fill_(-10.0)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99))
    ckpt = WORK / "vae.pt"
    step, timer = 0, Timer()
    gen = torch.Generator().manual_seed(args.seed)
    if ckpt.exists():
        state = load_work(ckpt)
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, timer = state["step"], Timer(state["elapsed"])
        gen.set_state(state["gen"])
        log(f"resumed at step {step}")
    n_params = sum(p.numel() for p in vae.parameters())
    log(f"VAE {n_params / 1e6:.2f} M params, {args.steps} steps of batch {args.batch}")

    def save() -> None:
        torch.save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step,
                    "elapsed": timer.elapsed, "gen": gen.get_state()}, ckpt)

    vae.train()
    rng = np.random.default_rng(args.seed + step)
    running = 0.0
    while step < args.steps:
        idx = rng.integers(0, len(images), args.batch)
        x = images_to_tensor(images[idx])
        w = edge_weights(masks[idx])
        # Cosine decay to 5 % after a short warm-up.
        frac = step / args.steps
        if args.minutes:
            frac = max(frac, timer.elapsed / (60 * args.minutes))
            if frac >= 1.0:
                break
        lr = args.lr * min(1.0, (step + 1) / 50) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        loss, l1 = vae_loss(vae, x, w, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        running = 0.9 * running + 0.1 * float(l1.detach()) if step > 1 else float(l1.detach())
        if step % 20 == 0:
            log(f"step {step} l1 {running:.4f} lr {lr:.2e} elapsed {timer.elapsed / 60:.1f} min")
        if step % 50 == 0:
            save()
        if step % 200 == 0:
            log(f"step {step} held-out reconstructions: {shape_accuracy(vae)}")
    save()
    log(f"done: {step} steps, {timer.elapsed / 60:.1f} min; held-out reconstructions: {shape_accuracy(vae)}")


if __name__ == "__main__":
    main()
