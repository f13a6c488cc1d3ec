"""Train the demo mask ControlNet on top of the frozen demo UNet and text encoder.

Standard ControlNet recipe: the control branch starts as a copy of the
UNet's encoder (time embedding, input blocks, middle block), the hint block's
last conv and all "zero convs" start at zero so training begins from the
unmodified UNet, and only the ControlNet is optimised with the UNet's own
v-prediction loss.  The hint is the object's coverage mask at image
resolution (white object on black, repeated to 3 channels, 0..1).
:data:`TEXT_DROP` of the captions are empty so the branch learns to place the
object from the mask alone, not from position words.

Usage (needs ``unet.pt`` from train_unet; resumes from ``controlnet.pt``)::

    .venv/bin/python -m training.train_controlnet --minutes 10
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
import torch.nn.functional as F

from nodes.diffusion.models.clip_text import ClipTextModel
from nodes.diffusion.models.controlnet import ControlNet
from nodes.diffusion.models.unet import UNetModel
from nodes.diffusion.sampling import make_schedule
from training.captions import caption_for
from training.common import (
    HINT_BLOCK_CHANNELS,
    SCHEDULE,
    UNET_CONFIG,
    WORK,
    Timer,
    encode_with_grad,
    load_work,
    log,
    setup_torch,
    text_config,
    token_ids,
    tokenizer,
)
from training.loop import add_run_args
from training.train_unet import OFFSET_NOISE, latent_set

HINT = "mask"
TEXT_DROP = 0.3


def mask_hint(masks: np.ndarray) -> torch.Tensor:
    """uint8 [N,H,W] coverage -> [N,3,H,W] float hint in 0..1 (what a user's mask image becomes)."""
    return torch.from_numpy(masks).float().div(255.0).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


def main() -> None:
    ap = argparse.ArgumentParser()
    add_run_args(ap, steps=100000, minutes=10.0, batch=32, lr=5e-4, data=6000, threads=2)
    args = ap.parse_args()
    setup_torch(args.threads)
    timer = Timer()
    latents, attrs, sf, masks = latent_set(args.data, with_masks=True)
    latents = latents * sf
    tok = tokenizer()
    base = load_work(WORK / "unet.pt")
    unet = UNetModel(UNET_CONFIG)
    unet.load_state_dict({k: v.half().float() for k, v in base["ema_unet"].items()})
    clip = ClipTextModel(text_config(tok))
    clip.load_state_dict({k: v.half().float() for k, v in base["ema_clip"].items()})
    unet.eval().requires_grad_(False)
    clip.eval().requires_grad_(False)

    torch.manual_seed(args.seed)
    net = ControlNet(UNET_CONFIG, hint_channels=3, hint_block_channels=HINT_BLOCK_CHANNELS)
    missing = net.load_state_dict(unet.state_dict(), strict=False)
    log(f"copied UNet encoder; ControlNet-only tensors: {len(missing.missing_keys)}")
    with torch.no_grad():
        for zc in net.zero_convs:
            zc[0].weight.zero_()
            zc[0].bias.zero_()
        net.middle_block_out[0].weight.zero_()
        net.middle_block_out[0].bias.zero_()
        net.input_hint_block[-1].weight.zero_()
        net.input_hint_block[-1].bias.zero_()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.0)
    step = 0
    gen = torch.Generator().manual_seed(args.seed)
    ckpt = WORK / "controlnet.pt"
    if ckpt.exists():
        s = load_work(ckpt)
        net.load_state_dict(s["model"])
        opt.load_state_dict(s["opt"])
        gen.set_state(s["gen"])
        step, timer = s["step"], Timer(s["elapsed"])
        log(f"resumed at step {step}")

    def save() -> None:
        torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(), "step": step,
                    "elapsed": timer.elapsed}, ckpt)

    acp = make_schedule(**SCHEDULE).alphas_cumprod.float()
    rng = np.random.default_rng(args.seed + 7 + step)
    running = None
    net.train()
    while step < args.steps:
        frac = max(step / args.steps, timer.elapsed / (60 * args.minutes) if args.minutes else 0.0)
        if frac >= 1.0:
            break
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        idx = rng.integers(0, len(latents), args.batch)
        caps = [caption_for(attrs[i], rng) if rng.random() >= TEXT_DROP else "" for i in idx]
        with torch.no_grad():
            ctx = encode_with_grad(clip, tok, token_ids(tok, caps))
        x0 = latents[idx]
        t = torch.randint(0, 1000, (args.batch,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen) + OFFSET_NOISE * torch.randn(
            x0.shape[0], x0.shape[1], 1, 1, generator=gen)
        a = acp[t].sqrt().view(-1, 1, 1, 1)
        sd = (1 - acp[t]).sqrt().view(-1, 1, 1, 1)
        x_t = a * x0 + sd * noise
        v = a * noise - sd * x0
        control = net(x_t, mask_hint(masks[idx]), t.float(), ctx)
        pred = unet(x_t, t.float(), ctx, control=control)
        loss = F.mse_loss(pred, v)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        running = float(loss.detach()) if running is None else 0.95 * running + 0.05 * float(loss.detach())
        if step % 20 == 0:
            log(f"step {step} loss {running:.4f} elapsed {timer.elapsed / 60:.1f} min")
        if step % 50 == 0:
            save()
    save()
    log(f"done: {step} steps, {timer.elapsed / 60:.1f} min")


if __name__ == "__main__":
    main()
