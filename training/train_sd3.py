"""Train the SD3-layout demo: a tiny MMDiT (Stability's key layout) on the FLUX demo's frozen files.

File set (ComfyUI's split folders; only the transformer is new):

* ``diffusion_models/nodegraph-shapes-sd3-v1.safetensors``: a tiny SD3.5-style MMDiT (original
  Stability keys ``joint_blocks.N.{x,context}_block...``, ``x_embedder``, ``pos_embed``,
  ``t_embedder``, ``y_embedder``, ``context_embedder``, ``final_layer``; per-head qk RMS-norm,
  adaLN-zero), trained here;
* the FLUX demo's CLIP-L-layout and T5-layout text encoders, **frozen** (the shipped files are
  read, never rewritten), loaded as DualCLIPLoader type ``sd3`` loads them: CLIP-L's penultimate
  hidden states (77 tokens) and its pooled feature, CLIP-G absent (zeros of bigG's width 1280, as
  ComfyUI and diffusers fill a missing encoder), T5's hidden states (padded to the file's
  ``nodegraph.t5.min_tokens``).  So the model's context width is 128 + 1280 = 1408 and its pooled
  width too; only the first 128 columns are ever non-zero.  Encodings are cached per caption,
  computed by the app's own :class:`~nodes.diffusion.sd3_runtime.SD3TextEncoder`;
* the FLUX demo's 16-channel ``ae`` VAE (4 channels used), with its latent scale/shift read from
  that file's metadata and repeated in the transformer's (SD3's own 1.5305 / 0.0609 do not apply).

Recipe, shared with :mod:`training.train_flux` (imported from there): cached ae latents of
12,000 shapes images, rectified flow (``x_t = (1 - s) x0 + s noise``, velocity target ``noise -
x0``), logit-normal sigmas shifted by :data:`FLOW_SHIFT`, position/size words with p = 0.75,
balanced position cells, the held-out (shape, colour, background, position) combinations never
drawn, 10 % empty captions, outline weight 4 on the 4 used channels, EMA weights exported.  The
12 unused latent channels are cut off as in the FLUX demo (their ``x_embedder`` columns and
``final_layer`` rows are zero and stay zero).

Flow shift: 2.0 (the FLUX demo's), not SD3's 3.0: the shift compensates for the token count
(SD3's 3.0 is for 1024² images, 4096 tokens); at 64 image tokens 2.0 is the value this dataset
was already shown to train well with.  It is written into the file's ``nodegraph.schedule``
and is what ModelSamplingSD3 sets in ``workflows/sd3_txt2img.json``.

Status: shipped after a second, resumed cycle (19,461 steps in all; shape 77.8 %, training/README.md).

Usage (resumes from ``$NODEGRAPH_TRAIN_DIR/sd3.pt``; time-budgeted)::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m training.train_sd3 --minutes 70 --threads 1
    .venv/bin/python -m training.train_sd3 --export      # write the diffusion model file
    .venv/bin/python -m training.train_sd3 --evaluate    # grade the shipped files through the loaders
"""

from __future__ import annotations

import argparse
import copy
import math

import numpy as np
import torch
import torch.nn.functional as F

from nodes.diffusion.families import rules_for
from nodes.diffusion.models.mmdit import MMDiT, MMDiTConfig
from nodes.diffusion.runtime import VAEModel
from nodes.diffusion.sampling.model_sampling import FlowSchedule
from nodes.diffusion.sd3_runtime import CLIP_G_WIDTH, SD3Model
from training.common import (
    DEMO_DIR,
    WORK,
    Timer,
    load_work,
    log,
)
from training.flux_demo import AE_PATH, CLIP_L_PATH, LATENT_CHANNELS, T5_PATH, T5_TOKENIZER_PATH, USED_CHANNELS
from training.loop import Trainer, add_common_args, parse_or_run_files
from training.train_flux import (
    flow_batch,
    flow_loss,
    flow_metadata,
    flow_training_set,
    grade_files,
    latent_set,
    load_ae,
    log_evals,
)

SD3_MODEL_PATH = DEMO_DIR / "diffusion_models" / "nodegraph-shapes-sd3-v1.safetensors"
SD3_DEMO_FILES = (SD3_MODEL_PATH, CLIP_L_PATH, T5_PATH, T5_TOKENIZER_PATH, AE_PATH)
CLIP_WIDTH = 128  # the demo CLIP-L's width (and the T5's d_model)
CONTEXT_DIM = CLIP_WIDTH + CLIP_G_WIDTH  # CLIP-L ++ zeros for the absent CLIP-G; T5 is zero-padded to it
FLOW_SHIFT = 2.0
SD3_CONFIG = MMDiTConfig(
    patch_size=2,
    in_channels=LATENT_CHANNELS,
    hidden_size=128,
    num_heads=4,  # head width 32, read back from the qk-norm weights' length
    depth=4,
    context_in_dim=CONTEXT_DIM,
    pooled_dim=CONTEXT_DIM,
    pos_embed_max_size=16,  # latents up to 32x32 (128x128 images); the 64x64 demo uses the centred 8x8
    mlp_ratio=4.0,
    qk_norm=True,
    attn2_layers=(),
    out_channels=LATENT_CHANNELS,
)


# ----------------------------------------------------------------------------- files


def ae_scaling() -> tuple[float, float]:
    """(scale, shift) of the shipped ae file's metadata: the normalisation its latents are used with."""
    from safetensors import safe_open

    with safe_open(str(AE_PATH), "pt") as f:
        meta = f.metadata() or {}
    return float(meta["nodegraph.vae.scaling_factor"]), float(meta["nodegraph.vae.shift_factor"])


def text_encoder():
    """The demo CLIP-L + T5 as DualCLIPLoader type sd3 loads them (CLIP-G slot empty)."""
    from nodes.diffusion.split_files import load_text_encoder_part, sd3_text_encoder

    return sd3_text_encoder([load_text_encoder_part(CLIP_L_PATH), None, load_text_encoder_part(T5_PATH)], "cpu")


def model_metadata(scale: float, shift: float, step: int) -> dict[str, str]:
    return flow_metadata(
        "sd3", FLOW_SHIFT, scale, shift, step,
        "nodegraph shapes demo, SD3 layout: a tiny SD3.5-style MMDiT (Stability keys, hidden "
        f"{SD3_CONFIG.hidden_size}, {SD3_CONFIG.depth} joint blocks, patch {SD3_CONFIG.patch_size}, qk-norm) "
        "trained with rectified flow on 64x64 images of one coloured shape on a plain background; use with "
        "the FLUX demo's CLIP-L and T5 files (DualCLIPLoader type sd3, no CLIP-G) and its ae VAE. Prompts "
        "like 'a small red circle in the top left on a blue background'.")


# ----------------------------------------------------------------------------- model


def unused_feature_masks(cfg: MMDiTConfig = SD3_CONFIG) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks of the unused latent channels' ``x_embedder`` weight entries ``(1, C, p, p)`` and
    ``final_layer`` output rows (feature order (ph, pw, c): row index % C is the channel)."""
    c, p = cfg.in_channels, cfg.patch_size
    x_mask = (torch.arange(c) >= USED_CHANNELS).view(1, c, 1, 1).expand(1, c, p, p)
    out_mask = torch.arange(p * p * cfg.out_channels) % cfg.out_channels >= USED_CHANNELS
    return x_mask, out_mask


def cut_unused_channels(model: MMDiT) -> None:
    x_mask, out_mask = unused_feature_masks(model.config)
    with torch.no_grad():
        model.x_embedder.proj.weight.masked_fill_(x_mask, 0)
        model.final_layer.linear.weight[out_mask] = 0
        model.final_layer.linear.bias[out_mask] = 0


def new_mmdit(seed: int) -> MMDiT:
    g = torch.Generator().manual_seed(seed)
    model = MMDiT(SD3_CONFIG).init_weights(g)
    with torch.no_grad():  # adaLN-zero: every block starts as the identity, the output at zero
        for name, p in model.named_parameters():
            if "adaLN_modulation" in name or name.startswith("final_layer.linear"):
                p.zero_()
    cut_unused_channels(model)
    return model


def runtime_objects(model: MMDiT, text, scale: float, shift: float):
    rules = rules_for("sd3", model_metadata(scale, shift, 0))
    sd3 = SD3Model(model, FlowSchedule(shift=FLOW_SHIFT), rules, torch.device("cpu"), torch.float32)
    return sd3, text, VAEModel(load_ae(scale, shift), torch.device("cpu"), torch.float32)


# ----------------------------------------------------------------------------- training


def main() -> None:
    ap = argparse.ArgumentParser()
    add_common_args(ap, steps=1_000_000, minutes=70.0, lr=8e-4, data=12000, eval_every=400, threads=1)
    ap.add_argument("--cache-captions", type=int, default=40000, help="max cached caption encodings")
    ap.add_argument("--export", action="store_true", help="write the diffusion model file from the EMA weights")
    ap.add_argument("--evaluate", action="store_true",
                    help="grade the shipped files through the app's loaders (12 prompts x 3 seeds, 40 held-out x 5)")
    args = parse_or_run_files(ap, evaluate_files=evaluate_files, export=export)
    if args is None:
        return
    timer = Timer()
    data = latent_set(args.data)
    scale, shift = ae_scaling()
    # the ae file's values were measured on the same 12,000 latents; a smaller --data set measures roughly them
    if not (math.isclose(scale, data["scale"], rel_tol=0.05) and abs(shift - data["shift"]) < 0.05 / scale):
        raise SystemExit(f"latent cache scale/shift {data['scale']}/{data['shift']} differ from the ae file's "
                         f"{scale}/{shift}")
    latents, attrs, pixel_w, held, probs = flow_training_set(data, scale, shift, args.edge_weight)
    text = text_encoder()
    torch.manual_seed(args.seed)
    model = new_mmdit(args.seed)
    params = list(model.parameters())
    ema = copy.deepcopy(model).requires_grad_(False)
    trainer = Trainer(args, WORK / "sd3.pt", {"model": model, "ema": ema}, params, timer, warmup=200, log_every=50,
                      save_every=200, extra={"scale": scale, "shift": shift})
    trainer.resume()
    gen = trainer.gen
    log(f"MMDiT {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params; scale {scale:.4f} shift "
        f"{shift:.4f}; T5 padded to {text.t5_min_tokens} tokens; {len(held)} held-out combinations")

    def evaluate() -> None:
        model.eval()
        log_evals(runtime_objects(ema, text, scale, shift), trainer.step)
        model.train()

    cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def encoded(caps: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(context [B, L, CONTEXT_DIM], pooled [B, CONTEXT_DIM]) exactly as the app encodes the captions;
        cached narrow (the columns past CLIP_WIDTH are the absent CLIP-G's zeros and T5's padding)."""
        rows = []
        for c in caps:
            hit = cache.get(c)
            if hit is None:
                cond = text.encode(c)
                ctx, pooled = cond.context[0], cond.pooled[0]
                assert ctx.shape[-1] == CONTEXT_DIM and not ctx[:, CLIP_WIDTH:].any() and not pooled[CLIP_WIDTH:].any()
                hit = (ctx[:, :CLIP_WIDTH].clone(), pooled[:CLIP_WIDTH].clone())
                if len(cache) < args.cache_captions:
                    cache[c] = hit
            rows.append(hit)
        ctx = F.pad(torch.stack([r[0] for r in rows]), (0, CONTEXT_DIM - CLIP_WIDTH))
        pooled = F.pad(torch.stack([r[1] for r in rows]), (0, CONTEXT_DIM - CLIP_WIDTH))
        return ctx, pooled

    rng = np.random.default_rng(args.seed + trainer.step)
    x_mask, out_mask = unused_feature_masks()
    model.train()

    def batch_loss() -> torch.Tensor:
        idx, caps, sig, x_t, target = flow_batch(latents, attrs, probs, args.batch, rng, gen, FLOW_SHIFT)
        return flow_loss(model(x_t, sig, *encoded(caps)), target, pixel_w[idx])

    def cut_unused_grads() -> None:
        model.x_embedder.proj.weight.grad.masked_fill_(x_mask, 0)
        model.final_layer.linear.weight.grad[out_mask] = 0
        model.final_layer.linear.bias.grad[out_mask] = 0

    trainer.run(batch_loss, evaluate, [(ema, model)], after_backward=cut_unused_grads,
                after_step=lambda: cut_unused_channels(model), log_suffix=lambda: f", {len(cache)} captions cached")


def evaluate_files(position_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)) -> None:
    """The shipped files' scores, loaded as Load Diffusion Model / DualCLIPLoader (sd3) / Load VAE load them."""
    from nodes.diffusion.checkpoint import load_vae_file
    from nodes.diffusion.split_files import load_diffusion_model_file

    model = load_diffusion_model_file(SD3_MODEL_PATH)
    clip = text_encoder()
    vae = load_vae_file(AE_PATH)
    grade_files(model, clip, vae, position_seeds)

def export() -> None:
    """Write the diffusion model file (fp16 safetensors, Stability's MMDiT keys) from the EMA weights."""
    from safetensors.torch import save_file

    s = load_work(WORK / "sd3.pt")
    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in s["ema"].items()}
    SD3_MODEL_PATH.parent.mkdir(parents=True, exist_ok=True)
    tmp = SD3_MODEL_PATH.with_suffix(".tmp")
    save_file(sd, str(tmp), metadata=model_metadata(s["scale"], s["shift"], s["step"]))
    tmp.chmod(0o644)  # package data: readable by everyone (the work folder's umask is private)
    tmp.replace(SD3_MODEL_PATH)
    log(f"wrote {SD3_MODEL_PATH} ({SD3_MODEL_PATH.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
