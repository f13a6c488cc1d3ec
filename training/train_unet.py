"""Train the demo UNet and its text encoder together, on precomputed VAE latents.

* Latents: a fixed set of generated images is encoded once with the trained
  VAE (its weights rounded to fp16 first, as shipped) and cached; the
  latent scaling factor is measured there as ``1 / std`` and written into the
  checkpoint's metadata by the exporter.
* Captions are redrawn every time a latent is used (random template, with or
  without size/position words, :func:`training.captions.caption_for`), and
  :data:`~training.common.EMPTY_CAPTION_PROB` of them are empty so
  classifier-free guidance has an unconditional model to contrast with.
* Text goes through the app's tokenizer and padding
  (:func:`training.common.encode_with_grad`), so what the UNet learns to read
  is exactly what :func:`nodes.diffusion.text.encode.encode` will hand it.
* Objective: v-prediction on the SD noise schedule, plus a small per-channel
  "offset noise": SD's schedule leaves ~7 % of the image's mean colour in the
  noise at t=999, and without the offset the model would take the *noise's*
  random mean as the background colour instead of reading it from the prompt.
* Loss weighting over noise levels (``--weighting``): plain v-MSE (default) or
  min-SNR-5.  Min-SNR converges faster on colour but, for v-prediction, weights
  the noisy half of the schedule (t > ~400, where a 16x16 latent decides the
  object's silhouette) 3-10x less than plain v-MSE does.
* Loss weighting over latent pixels (``--edge-weight``): latent pixels whose
  4x4 image patch touches the object's outline count up to ``1 + edge_weight``
  times (:func:`outline_weights`), as the VAE's loss does in pixels.  A square
  and a rounded square differ only there; with plain MSE the flat interior and
  background dominate and squares stayed rounded.
* The shipped weights used min-SNR without outline weight for their first
  13,561 steps (shapes 39 % by the checker), plain v-MSE for the next 7,224
  (69 %) and plain v-MSE with ``--edge-weight 4`` for the last 3,090 (94 %);
  see training/README.md.
* EMA weights are what gets exported.

Usage (resumes from ``$NODEGRAPH_TRAIN_DIR/unet.pt``)::

    .venv/bin/python -m training.train_unet --minutes 45

To continue from the shipped weights instead, ``python -m training.restore`` first:
the run then starts a new optimizer with its own warm-up and cosine cycle
(``--new-cycle`` does the same for a finished run in the work folder).
"""

from __future__ import annotations

import argparse
import copy
import math
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from nodes.diffusion.families import rules_for
from nodes.diffusion.models.clip_text import ClipTextModel
from nodes.diffusion.models.unet import UNetModel
from nodes.diffusion.models.vae import AutoencoderKL
from nodes.diffusion.runtime import DiffusionModel, TextEncoder, VAEModel
from nodes.diffusion.sampling import make_schedule
from training.captions import caption_for
from training.common import (
    EMPTY_CAPTION_PROB,
    EVAL_PROMPTS,
    IMAGE_SIZE,
    SCHEDULE,
    UNET_CONFIG,
    VAE_CONFIG,
    WORK,
    Timer,
    checkpoint_metadata,
    encode_with_grad,
    grade,
    images_to_tensor,
    load_work,
    log,
    outline_ring,
    sample_images,
    setup_torch,
    text_config,
    token_ids,
    tokenizer,
)
from training.shapes import generate_batch

LATENT_SEED = 2000  # generate_batch seed of the images behind the cached latents
OFFSET_NOISE = 0.05
MIN_SNR_GAMMA = 5.0


def load_vae(scaling_factor: float = 1.0) -> AutoencoderKL:
    """The trained VAE with its weights rounded through fp16, exactly as shipped."""
    state = load_work(WORK / "vae.pt")["model"]
    vae = AutoencoderKL(replace(VAE_CONFIG, scaling_factor=scaling_factor))
    vae.load_state_dict({k: v.half().float() for k, v in state.items()})
    return vae.eval().requires_grad_(False)


def latent_set(n: int, with_masks: bool = False):
    """(unscaled posterior means [n,4,16,16], attrs, scaling factor[, masks]), cached on disk.

    The object masks (uint8 [n,64,64]) are kept for the ControlNet, which trains on the same set.
    """
    path = WORK / f"latents_{LATENT_SEED}_{n}.pt"
    if path.exists():
        d = load_work(path)
        out = d["latents"], d["attrs"], d["scaling_factor"]
        return (*out, d["masks"]) if with_masks else out
    log(f"generating and encoding {n} images")
    b = generate_batch(LATENT_SEED, n, IMAGE_SIZE)
    vae = load_vae()
    chunks = []
    with torch.no_grad():
        for i in range(0, n, 64):
            mean, _ = vae.encode_moments(images_to_tensor(b.images[i : i + 64]))
            chunks.append(mean)
    latents = torch.cat(chunks)
    sf = float(1.0 / latents.std())
    torch.save({"latents": latents, "attrs": b.attrs, "scaling_factor": sf, "masks": b.masks}, path)
    log(f"latents cached; std {latents.std():.4f} -> scaling factor {sf:.4f}")
    return (latents, b.attrs, sf, b.masks) if with_masks else (latents, b.attrs, sf)


def outline_weights(masks: np.ndarray, edge_weight: float, latent_size: int) -> torch.Tensor:
    """[n,1,h,w] loss weights: 1 + ``edge_weight`` x the share of each latent pixel's patch near the outline.

    A square and a rounded square differ only along the outline (the corners); plain MSE spends most of
    its weight on flat interior and background, where every shape looks the same.
    """
    return 1.0 + edge_weight * F.avg_pool2d(outline_ring(masks), masks.shape[-1] // latent_size)


def runtime_objects(unet: UNetModel, clip: ClipTextModel, tok, sf: float):
    """Wrap training modules in the app's runtime objects (same code path as inference)."""
    rules = rules_for("custom", checkpoint_metadata(sf, "training-time check"))
    model = DiffusionModel(unet, make_schedule(**SCHEDULE), rules, torch.device("cpu"), torch.float32)
    text = TextEncoder((clip,), tok, rules, torch.device("cpu"))
    vae = VAEModel(load_vae(sf), torch.device("cpu"), torch.float32)
    return model, text, vae


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100000)
    ap.add_argument("--minutes", type=float, default=45.0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--data", type=int, default=6000)
    ap.add_argument("--ema", type=float, default=0.995)
    ap.add_argument("--eval-every", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--edge-weight", type=float, default=4.0,
                    help="extra loss weight on latent pixels along the object's outline (0 = plain MSE)")
    ap.add_argument("--new-cycle", action="store_true",
                    help="keep the saved weights but start a fresh optimizer, warm-up and cosine cycle")
    ap.add_argument("--weighting", choices=("v", "min-snr"), default="v",
                    help="loss weight over noise levels: plain v-prediction MSE or min-SNR-5 (see module doc)")
    args = ap.parse_args()
    setup_torch(args.threads)
    timer = Timer()
    latents, attrs, sf, masks = latent_set(args.data, with_masks=True)
    latents = latents * sf
    pixel_w = outline_weights(masks, args.edge_weight, latents.shape[-1]) if args.edge_weight else None
    tok = tokenizer()
    torch.manual_seed(args.seed)
    unet = UNetModel(UNET_CONFIG)
    clip = ClipTextModel(text_config(tok))
    with torch.no_grad():  # CLIP-like init: small embeddings; zero the UNet's output conv (LDM does)
        for name, p in clip.named_parameters():
            if "embedding" in name:
                p.normal_(0, 0.02)
        unet.out[2].weight.zero_()
        unet.out[2].bias.zero_()
    params = list(unet.parameters()) + list(clip.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    ema_unet, ema_clip = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(clip).requires_grad_(False)
    step = warm_from = 0
    gen = torch.Generator().manual_seed(args.seed)
    ckpt = WORK / "unet.pt"
    if ckpt.exists():
        s = load_work(ckpt)
        unet.load_state_dict(s["unet"])
        clip.load_state_dict(s["clip"])
        ema_unet.load_state_dict(s["ema_unet"])
        ema_clip.load_state_dict(s["ema_clip"])
        fresh = "opt" not in s or args.new_cycle
        if not fresh:  # an interrupted run: continue it exactly
            opt.load_state_dict(s["opt"])
            gen.set_state(s["gen"])
            warm_from = s.get("warm_from", 0)
        else:  # restored from shipped weights, or --new-cycle: new optimizer, new warm-up and cosine cycle
            warm_from = s["step"]
        step, timer = s["step"], Timer(0.0 if fresh else s["elapsed"])
        log(f"resumed at step {step}" + (" with a fresh optimizer and LR cycle" if fresh else ""))
    n_unet = sum(p.numel() for p in unet.parameters()) / 1e6
    n_text = sum(p.numel() for p in clip.parameters()) / 1e6
    log(f"UNet {n_unet:.2f} M, text {n_text:.2f} M params; scaling factor {sf:.4f}")

    def save() -> None:
        torch.save({"unet": unet.state_dict(), "clip": clip.state_dict(), "ema_unet": ema_unet.state_dict(),
                    "ema_clip": ema_clip.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                    "step": step, "elapsed": timer.elapsed, "scaling_factor": sf, "warm_from": warm_from}, ckpt)

    def evaluate() -> None:
        model, text, vae = runtime_objects(ema_unet, ema_clip, tok, sf)
        imgs = sample_images(model, text, vae, EVAL_PROMPTS, (0,))
        log(f"step {step} eval (EMA, 12 prompts x 1 seed, euler 10 steps cfg 5): {grade(imgs, EVAL_PROMPTS, (0,))}")
        np.save(WORK / "unet_eval.npy", imgs)

    schedule = make_schedule(**SCHEDULE)
    acp = schedule.alphas_cumprod.float()
    rng = np.random.default_rng(args.seed + step)
    running = None
    unet.train()
    clip.train()
    while step < args.steps:
        frac = max(step / args.steps, timer.elapsed / (60 * args.minutes) if args.minutes else 0.0)
        if frac >= 1.0:
            break
        idx = rng.integers(0, len(latents), args.batch)
        caps = [caption_for(attrs[i], rng) if rng.random() >= EMPTY_CAPTION_PROB else "" for i in idx]
        x0 = latents[idx]
        t = torch.randint(0, schedule.num_train_timesteps, (args.batch,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen) + OFFSET_NOISE * torch.randn(
            x0.shape[0], x0.shape[1], 1, 1, generator=gen)
        a = acp[t].sqrt().view(-1, 1, 1, 1)
        s = (1 - acp[t]).sqrt().view(-1, 1, 1, 1)
        x_t = a * x0 + s * noise
        v = a * noise - s * x0
        lr = args.lr * min(1.0, (step - warm_from + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        ctx = encode_with_grad(clip, tok, token_ids(tok, caps))
        pred = unet(x_t, t.float(), ctx)
        snr = acp[t] / (1 - acp[t])
        if args.weighting == "min-snr":
            w = torch.clamp(snr, max=MIN_SNR_GAMMA) / (snr + 1)  # min-SNR weight for v-prediction
        else:
            w = torch.ones_like(snr)
        err = F.mse_loss(pred, v, reduction="none")
        if pixel_w is not None:
            err = err * pixel_w[idx]
        loss = (w * err.mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema_unet.parameters(), unet.parameters(), strict=True):
                e.lerp_(p, 1 - decay)
            for e, p in zip(ema_clip.parameters(), clip.parameters(), strict=True):
                e.lerp_(p, 1 - decay)
        running = float(loss.detach()) if running is None else 0.98 * running + 0.02 * float(loss.detach())
        if step % 20 == 0:
            log(f"step {step} loss {running:.4f} lr {lr:.2e} elapsed {timer.elapsed / 60:.1f} min")
        if step % 100 == 0:
            save()
        if step % args.eval_every == 0:
            evaluate()
    save()
    evaluate()
    log(f"done: {step} steps, {timer.elapsed / 60:.1f} min")


if __name__ == "__main__":
    main()
