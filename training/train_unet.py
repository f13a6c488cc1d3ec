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
  times (:func:`~training.common.outline_weights`), as the VAE's loss does in pixels.  A square
  and a rounded square differ only there; with plain MSE the flat interior and
  background dominate and squares stayed rounded.
* The shipped weights used min-SNR without outline weight for their first
  13,561 steps (shapes 39 % by the checker), plain v-MSE for the next 7,224
  (69 %) and plain v-MSE with ``--edge-weight 4`` for the last 3,090 (94 %);
  see training/README.md.
* EMA weights are what gets exported.
* Position and size words (``--positions``, the FLUX demo's recipe): captions carry a size word
  and a position phrase with probability :data:`~training.common.CAPTION_WORD_PROB` each
  (instead of 0.5), the samples of position-worded captions are drawn so every 3x3 position
  cell is equally likely (:func:`~training.common.sampling_weights`), and the (shape, colour,
  background, position) combinations of :func:`~training.common.held_out_prompts` are never
  drawn.  Unlike the FLUX demo, captions *without* a position phrase keep the generator's own
  distribution (~40 % centre): a prompt without one (a regional half, the test prompts) should
  still get a centred object.  A first run that balanced every draw (2,800 steps) lowered the
  regional workflow from 7/10 to 2/10 without raising position scores; the prior of unworded
  prompts is the suspected cause.
* Non-square canvases (``--rect-frac``): that share of the steps uses a batch of 64-row x
  32-column or 32-row x 64-column images (one aspect per batch, cached latents of their own,
  16x8 / 8x16), so area-conditioned halves of a 64x64 image (regional prompts) are an aspect
  the UNet has seen.  Their captions use the position cells of that canvas and never a size word.
* ``--layout-high-t P``: a share P of the captions that name a position or size get a timestep
  from [700, 1000) instead of a uniform one.  Where the object goes is decided in the first,
  noisiest sampling steps; with uniform timesteps few position-worded examples land there
  (the FLUX demo's shifted logit-normal sigmas put most of its training there anyway).
* ``--first-step-frac P``: a share P of the samples is trained as the sampler's first step sees
  its input: t = 999 and pure noise (``x_t = sigma_999 * noise``, the v target unchanged).  SD's
  scaled-linear schedule leaves ``sqrt(alphas_cumprod[999])`` = 0.068 of the image in a t=999
  training input, enough over a blob of latent pixels for the UNet to read where the object is
  from the noise itself (Lin et al. 2023, "Common diffusion noise schedules and sample steps are
  flawed").  A sampler starts from pure noise, so the model then takes a random fluctuation of the
  seed's noise for the object and the layout follows the seed, not the words: before this the
  shipped weights put small objects of most held-out prompts at the same spot for seed 0.
  Trained from pure noise, the first step predicts the caption's mean image instead (the object's
  colour at the asked place), which later steps sharpen.  The FLUX demo's rectified flow reaches
  pure noise at sigma 1 and never had this problem.
* ``--freeze-text`` keeps the text encoder as it is (the FLUX demo's CLIP-L file is this
  encoder), so only the UNet trains.

Usage (resumes from ``$NODEGRAPH_TRAIN_DIR/unet.pt``)::

    .venv/bin/python -m training.train_unet --minutes 45
    # the position/size + non-square fine-tune of the shipped weights (training/README.md)
    .venv/bin/python -m training.train_unet --minutes 70 --new-cycle --freeze-text --positions --rect-frac 0.3

To continue from the shipped weights instead, ``python -m training.restore`` first:
the run then starts a new optimizer with its own warm-up and cosine cycle
(``--new-cycle`` does the same for a finished run in the work folder).
"""

from __future__ import annotations

import argparse
import copy
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
from training.captions import caption_for, parse_caption
from training.common import (
    CAPTION_WORD_PROB,
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
    evaluate_positions,
    grade,
    held_out_combo,
    held_out_prompts,
    images_to_tensor,
    load_work,
    log,
    outline_weights,
    sample_images,
    sampling_weights,
    setup_torch,
    text_config,
    token_ids,
    tokenizer,
)
from training.loop import Trainer, add_common_args
from training.shapes import generate_batch

LATENT_SEED = 2000  # generate_batch seed of the images behind the cached latents
# Non-square canvases (rows, columns) -> generate_batch seed of their cached latents.
RECT_CANVASES = {(64, 32): 2200, (32, 64): 2201}
OFFSET_NOISE = 0.05
MIN_SNR_GAMMA = 5.0
LAYOUT_T_FROM = 700  # --layout-high-t draws from [700, 1000): where a 16x16 latent's layout is decided


def load_vae(scaling_factor: float = 1.0) -> AutoencoderKL:
    """The trained VAE with its weights rounded through fp16, exactly as shipped."""
    state = load_work(WORK / "vae.pt")["model"]
    vae = AutoencoderKL(replace(VAE_CONFIG, scaling_factor=scaling_factor))
    vae.load_state_dict({k: v.half().float() for k, v in state.items()})
    return vae.eval().requires_grad_(False)


def latent_set(n: int, with_masks: bool = False, canvas: tuple[int, int] | None = None):
    """(unscaled posterior means [n,4,16,16], attrs, scaling factor[, masks]), cached on disk.

    The object masks (uint8 [n,64,64]) are kept for the ControlNet, which trains on the same set.
    ``canvas`` = (rows, columns) of a non-square set (:data:`RECT_CANVASES`); its scaling factor
    is measured but the square set's is the one used.
    """
    if canvas is None:
        seed, (rows, cols) = LATENT_SEED, (IMAGE_SIZE, IMAGE_SIZE)
        path = WORK / f"latents_{LATENT_SEED}_{n}.pt"
    else:
        seed, (rows, cols) = RECT_CANVASES[canvas], canvas
        path = WORK / f"latents_{seed}_{n}_{rows}x{cols}.pt"
    if path.exists():
        d = load_work(path)
        out = d["latents"], d["attrs"], d["scaling_factor"]
        return (*out, d["masks"]) if with_masks else out
    log(f"generating and encoding {n} images")
    b = generate_batch(seed, n, rows, cols)
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


def runtime_objects(unet: UNetModel, clip: ClipTextModel, tok, sf: float):
    """Wrap training modules in the app's runtime objects (same code path as inference)."""
    rules = rules_for("custom", checkpoint_metadata(sf, "training-time check"))
    model = DiffusionModel(unet, make_schedule(**SCHEDULE), rules, torch.device("cpu"), torch.float32)
    text = TextEncoder((clip,), tok, rules, torch.device("cpu"))
    vae = VAEModel(load_vae(sf), torch.device("cpu"), torch.float32)
    return model, text, vae


def main() -> None:
    ap = argparse.ArgumentParser()
    add_common_args(ap, steps=100000, minutes=45.0, lr=5e-4, data=6000, eval_every=300, threads=2)
    ap.add_argument("--weighting", choices=("v", "min-snr"), default="v",
                    help="loss weight over noise levels: plain v-prediction MSE or min-SNR-5 (see module doc)")
    ap.add_argument("--freeze-text", action="store_true", help="train only the UNet; the text encoder stays as is")
    ap.add_argument("--positions", action="store_true",
                    help="size/position words in 75 %% of captions, position cells drawn equally often, "
                    "held-out prompt combinations never drawn; evals grade the held-out prompts")
    ap.add_argument("--rect-frac", type=float, default=0.0,
                    help="share of steps on a batch of 64x32 or 32x64 images (0 = square only)")
    ap.add_argument("--rect-data", type=int, default=3000, help="cached images per non-square canvas")
    ap.add_argument("--first-step-frac", type=float, default=0.0,
                    help="share of samples trained as the sampler's first step sees it: t=999 from pure noise")
    ap.add_argument("--layout-high-t", type=float, default=0.0,
                    help=f"share of the captions naming a position or size trained at t >= {LAYOUT_T_FROM} (where the "
                    "layout is decided) instead of a uniform t")
    args = ap.parse_args()
    setup_torch(args.threads)
    timer = Timer()
    latents, attrs, sf, masks = latent_set(args.data, with_masks=True)
    latents = latents * sf
    pixel_w = outline_weights(masks, args.edge_weight, latents.shape[-1]) if args.edge_weight else None
    held = {held_out_combo(a) for _, a in held_out_prompts()} if args.positions else set()
    def draw_probs(att):  # (position-balanced, natural) draw probabilities, held-out combinations never
        return (sampling_weights(att, held), sampling_weights(att, held, balanced=False)) if args.positions else None

    # (latents, attrs, per-pixel weights, draw probabilities) per canvas; None = the square set
    sets = {None: (latents, attrs, pixel_w, draw_probs(attrs))}
    if args.rect_frac > 0:
        for canvas in RECT_CANVASES:
            lat, att, _, msk = latent_set(args.rect_data, with_masks=True, canvas=canvas)
            pw = outline_weights(msk, args.edge_weight, lat.shape[-1]) if args.edge_weight else None
            sets[canvas] = (lat * sf, att, pw, draw_probs(att))
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
    params = list(unet.parameters()) + ([] if args.freeze_text else list(clip.parameters()))
    ema_unet, ema_clip = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(clip).requires_grad_(False)
    trainer = Trainer(args, WORK / "unet.pt", {"unet": unet, "clip": clip, "ema_unet": ema_unet, "ema_clip": ema_clip},
                      params, timer, warmup=100, log_every=20, save_every=100, extra={"scaling_factor": sf})
    trainer.resume()
    gen = trainer.gen
    n_unet = sum(p.numel() for p in unet.parameters()) / 1e6
    n_text = sum(p.numel() for p in clip.parameters()) / 1e6
    log(f"UNet {n_unet:.2f} M, text {n_text:.2f} M params{' (frozen)' if args.freeze_text else ''}; "
        f"scaling factor {sf:.4f}; {len(held)} held-out combinations; canvases {list(sets)}")

    def evaluate() -> None:
        step = trainer.step
        model, text, vae = runtime_objects(ema_unet, ema_clip, tok, sf)
        imgs = sample_images(model, text, vae, EVAL_PROMPTS, (0,))
        log(f"step {step} eval (EMA, 12 prompts x 1 seed, euler 10 steps cfg 5): {grade(imgs, EVAL_PROMPTS, (0,))}")
        np.save(WORK / "unet_eval.npy", imgs)
        if args.positions:
            log(f"step {step} held-out positions/sizes (40 x 1): {evaluate_positions(model, text, vae)}")
        if args.rect_frac > 0:  # the regional halves' canvas: 64 rows x 32 columns
            imgs = sample_images(model, text, vae, EVAL_PROMPTS, (0,), height=64, width=32)
            log(f"step {step} eval 64x32 (rows x cols, 12 prompts x 1 seed): {grade(imgs, EVAL_PROMPTS, (0,))}")

    schedule = make_schedule(**SCHEDULE)
    acp = schedule.alphas_cumprod.float()
    rng = np.random.default_rng(args.seed + trainer.step)
    unet.train()
    clip.train(not args.freeze_text)
    if args.freeze_text:
        clip.requires_grad_(False)

    def batch_loss() -> torch.Tensor:
        canvas = None
        if args.rect_frac > 0 and rng.random() < args.rect_frac:
            canvas = list(RECT_CANVASES)[int(rng.integers(len(RECT_CANVASES)))]
        b_lat, b_attrs, b_pw, probs = sets[canvas]
        if probs is None:
            idx = rng.integers(0, len(b_lat), args.batch)
        else:  # position-worded captions from the balanced draw, the rest from the generator's own distribution
            with_pos = rng.random(args.batch) < CAPTION_WORD_PROB
            idx = np.where(with_pos, rng.choice(len(b_lat), args.batch, p=probs[0]),
                           rng.choice(len(b_lat), args.batch, p=probs[1]))
        if args.positions:
            caps = [caption_for(b_attrs[i], rng, with_size=canvas is None and bool(rng.random() < CAPTION_WORD_PROB),
                                with_position=bool(wp))
                    if rng.random() >= EMPTY_CAPTION_PROB else ""
                    for i, wp in zip(idx, with_pos, strict=True)]  # fmt: skip
        else:
            caps = [caption_for(b_attrs[i], rng, with_size=None if canvas is None else False)
                    if rng.random() >= EMPTY_CAPTION_PROB else "" for i in idx]  # fmt: skip
        x0 = b_lat[idx]
        t = torch.randint(0, schedule.num_train_timesteps, (args.batch,), generator=gen)
        if args.layout_high_t > 0:  # captions naming a position or size: more of their steps at high noise
            named = torch.tensor([parse_caption(c).keys() & {"position", "size"} != set() for c in caps])
            high = torch.randint(LAYOUT_T_FROM, schedule.num_train_timesteps, (args.batch,), generator=gen)
            pick = named & (torch.rand(args.batch, generator=gen) < args.layout_high_t)
            t = torch.where(pick, high, t)
        first = None
        if args.first_step_frac > 0:  # the sampler's first step: t = 999 and no image left in the input
            first = torch.rand(args.batch, generator=gen) < args.first_step_frac
            t = torch.where(first, schedule.num_train_timesteps - 1, t)
        noise = torch.randn(x0.shape, generator=gen) + OFFSET_NOISE * torch.randn(
            x0.shape[0], x0.shape[1], 1, 1, generator=gen)
        a = acp[t].sqrt().view(-1, 1, 1, 1)
        s = (1 - acp[t]).sqrt().view(-1, 1, 1, 1)
        x_t = a * x0 + s * noise
        if first is not None:
            x_t = torch.where(first.view(-1, 1, 1, 1), s * noise, x_t)
        v = a * noise - s * x0
        with torch.set_grad_enabled(not args.freeze_text):
            ctx = encode_with_grad(clip, tok, token_ids(tok, caps))
        pred = unet(x_t, t.float(), ctx)
        snr = acp[t] / (1 - acp[t])
        if args.weighting == "min-snr":
            w = torch.clamp(snr, max=MIN_SNR_GAMMA) / (snr + 1)  # min-SNR weight for v-prediction
        else:
            w = torch.ones_like(snr)
        err = F.mse_loss(pred, v, reduction="none")
        if b_pw is not None:
            err = err * b_pw[idx]
        return (w * err.mean(dim=(1, 2, 3))).mean()

    ema_pairs = [(ema_unet, unet)] + ([] if args.freeze_text else [(ema_clip, clip)])
    trainer.run(batch_loss, evaluate, ema_pairs)


if __name__ == "__main__":
    main()
