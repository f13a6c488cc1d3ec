"""Train the FLUX-layout demo: a tiny FLUX.1 transformer and its T5-layout text encoder, on cached latents.

See :mod:`training.flux_demo` for the file set.  What is trained and what is reused:

* VAE: the UNet demo's, converted exactly to the FLUX ``ae`` layout (not trained here).  Latents of
  the training images are encoded once (fp16-rounded weights, as shipped) and cached with their
  normalisation, measured here: shift = mean, scale = 1 / std of the 4 used channels (written into
  the VAE file's metadata, so VAE Encode/Decode and the sampler agree on unit-variance latents).
* CLIP-L slot: the UNet demo's text encoder, frozen; its pooled vector (final-norm EOS feature, what
  :func:`nodes.diffusion.flux_runtime.clip_pooled` returns) is cached per caption.
* T5 slot: a 2-layer T5 v1.1-layout encoder trained jointly with the transformer, reading the
  prompt through the app's own T5 path (:func:`nodes.diffusion.flux_runtime._t5_tokens`, padded
  to :data:`~training.flux_demo.T5_MIN_TOKENS`, unmasked).
* Transformer: rectified flow (``x_t = (1 - s) x0 + s noise``, target velocity ``noise - x0``),
  sigmas drawn logit-normal then shifted by :data:`~training.flux_demo.FLOW_SHIFT` (SD3/FLUX
  training), the same fixed shift the exported schedule samples with.  adaLN-zero init.  The
  12 latent channels the VAE does not use are cut off: ``img_in`` columns and ``final_layer`` rows
  for them are zero and stay zero (the network never reads them and predicts 0 there), and the
  loss covers the 4 used channels, with the UNet demo's outline weight (squares need it).
* Position and size words: captions carry them with probability 0.75 each (the UNet demo: 0.5),
  and samples are drawn so that every 3x3 position cell is equally likely (the generator puts
  ~40 % of objects in the center cell and ~3 % in each corner).  The (shape, colour, background,
  position) combinations of :func:`held_out_prompts` never occur in training.
* 10 % empty captions, so CFG has an unconditional model.  EMA weights are exported.

Usage (resumes from ``$NODEGRAPH_TRAIN_DIR/flux.pt``; time-budgeted like the other scripts)::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m training.train_flux --minutes 80
    .venv/bin/python -m training.train_flux --export      # write the four demo files
"""

from __future__ import annotations

import argparse
import copy
import json

import numpy as np
import torch
import torch.nn.functional as F

from nodes.diffusion.families import rules_for
from nodes.diffusion.flux_runtime import FluxModel, FluxTextEncoder, _t5_tokens, clip_pooled
from nodes.diffusion.models.flux import FluxTransformer
from nodes.diffusion.models.t5 import T5Encoder, T5Tokenizer
from nodes.diffusion.models.vae import AutoencoderKL, infer_vae_config
from nodes.diffusion.runtime import VAEModel
from nodes.diffusion.sampling.model_sampling import FlowSchedule
from training.captions import caption_for
from training.common import (
    CAPTION_WORD_PROB,
    EMPTY_CAPTION_PROB,
    EVAL_PROMPTS,
    IMAGE_SIZE,
    WORK,
    Timer,
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
)
from training.flux_demo import (
    AE_PATH,
    CLIP_L_PATH,
    FLOW_SHIFT,
    FLUX_CONFIG,
    FLUX_MODEL_PATH,
    LATENT_CHANNELS,
    T5_MIN_TOKENS,
    T5_PATH,
    T5_TOKENIZER_PATH,
    USED_CHANNELS,
    ae_state,
    build_t5_tokenizer,
    clip_l_metadata,
    clip_l_state,
    t5_config,
)
from training.loop import Trainer, add_common_args, parse_or_run_files
from training.shapes import generate_batch

LATENT_SEED = 2100
DEFAULTS = {"steps": 10, "cfg": 4.0, "sampler": "euler", "scheduler": "simple"}


# ----------------------------------------------------------------------------- data


def load_ae(scale: float = 1.0, shift: float = 0.0) -> AutoencoderKL:
    sd = {k: v.half().float() for k, v in ae_state().items()}
    vae = AutoencoderKL(infer_vae_config(sd, scale, shift))
    vae.load_state_dict(sd)
    return vae.eval().requires_grad_(False)


def latent_set(n: int) -> dict:
    """Raw 4-channel ae latents, attrs, masks and the measured (scale, shift), cached."""
    path = WORK / f"flux_latents_{LATENT_SEED}_{n}.pt"
    if path.exists():
        return load_work(path)
    log(f"generating and encoding {n} images")
    b = generate_batch(LATENT_SEED, n, IMAGE_SIZE)
    vae = load_ae()
    chunks = []
    with torch.no_grad():
        for i in range(0, n, 64):
            mean, _ = vae.encode_moments(images_to_tensor(b.images[i : i + 64]))
            chunks.append(mean[:, :USED_CHANNELS].clone())
    latents = torch.cat(chunks)
    d = {"latents": latents, "attrs": b.attrs, "masks": b.masks, "shift": float(latents.mean()),
         "scale": float(1.0 / latents.std())}  # fmt: skip
    torch.save(d, path)
    log(f"latents cached: shift {d['shift']:.4f} scale {d['scale']:.4f}")
    return d


# ----------------------------------------------------------------------------- models


def _joint_attention_autograd(txt, img, pe):
    """:func:`nodes.diffusion.models.flux.joint_attention` without ``out=`` buffers (which autograd
    refuses): the same rotation and attention, concatenating instead of writing into slices."""
    from nodes.diffusion.models.flux import apply_rope, sdpa_merge_heads

    q = torch.cat([txt[0], img[0]], dim=2)
    k = torch.cat([txt[1], img[1]], dim=2)
    return sdpa_merge_heads(apply_rope(q, pe), apply_rope(k, pe), torch.cat([txt[2], img[2]], dim=2))


def enable_training_attention() -> None:
    """Make the app's FLUX blocks differentiable (inference keeps the buffer-writing version)."""
    import nodes.diffusion.models.flux as flux_module

    flux_module.joint_attention = _joint_attention_autograd


def new_transformer(seed: int) -> FluxTransformer:
    g = torch.Generator().manual_seed(seed)
    model = FluxTransformer(FLUX_CONFIG).init_weights(g)
    with torch.no_grad():  # adaLN-zero: every block starts as the identity, the output at zero
        for name, p in model.named_parameters():
            if ("_mod.lin" in name or "modulation.lin" in name or "adaLN_modulation" in name
                    or name.startswith("final_layer.linear")):
                p.zero_()
        cut_unused_channels(model)
    return model


def cut_unused_channels(model: FluxTransformer) -> None:
    """Zero the patch features of latent channels >= USED_CHANNELS in img_in (columns) and final_layer (rows).

    Patchified feature index = channel * 4 + (row, col) in the 2x2 patch, so channel c owns 4c..4c+3.
    """
    k = 4 * USED_CHANNELS
    with torch.no_grad():
        model.img_in.weight[:, k:] = 0
        model.final_layer.linear.weight[k:] = 0
        model.final_layer.linear.bias[k:] = 0


def new_t5(vocab: int, seed: int) -> T5Encoder:
    g = torch.Generator().manual_seed(seed + 1)
    t5 = T5Encoder(t5_config(vocab)).init_weights(g)
    cfg = t5.config
    with torch.no_grad():  # T5 does not scale attention logits: scale q down instead (HF's init does too)
        t5.shared.weight.mul_(0.5)
        for block in t5.encoder.block:
            block.layer[0].SelfAttention.q.weight.mul_(cfg.d_kv**-0.5)
        t5.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.normal_(0, 0.1, generator=g)
    return t5


def load_clip():
    """The demo CLIP exactly as the app loads the exported CLIP-L-layout file (activation, tokenizer)."""
    from nodes.diffusion.split_files import load_text_encoder_part

    export_fixed_files()
    part = load_text_encoder_part(CLIP_L_PATH)
    return part.module.float(), part.tokenizer


def export_fixed_files() -> None:
    """The files that do not change with training: CLIP-L-layout encoder, T5 tokenizer (written if missing)."""
    from safetensors.torch import save_file

    if not CLIP_L_PATH.exists():
        CLIP_L_PATH.parent.mkdir(parents=True, exist_ok=True)
        tmp = CLIP_L_PATH.with_suffix(".tmp")
        save_file(clip_l_state(), str(tmp), metadata=clip_l_metadata())
        tmp.chmod(0o644)
        tmp.replace(CLIP_L_PATH)
    if not T5_TOKENIZER_PATH.exists():
        build_t5_tokenizer(T5_TOKENIZER_PATH)


def flow_metadata(family: str, flow_shift: float, scale: float, shift: float, step: int,
                  description: str) -> dict[str, str]:
    """Safetensors metadata of a flow-matching demo transformer (this one and :mod:`training.train_sd3`'s):
    family, schedule, sampling defaults and the ae latents' normalisation -- what shapes cannot tell a loader."""
    return {
        "nodegraph.family": family,
        "nodegraph.schedule": json.dumps({"kind": "flow", "shift": flow_shift, "multiplier": 1.0}),
        "nodegraph.default_size": str(IMAGE_SIZE),
        "nodegraph.default_steps": str(DEFAULTS["steps"]),
        "nodegraph.default_cfg": str(DEFAULTS["cfg"]),
        "nodegraph.default_sampler": DEFAULTS["sampler"],
        "nodegraph.default_scheduler": DEFAULTS["scheduler"],
        "nodegraph.vae.scaling_factor": f"{scale:.6f}",
        "nodegraph.vae.shift_factor": f"{shift:.6f}",
        "nodegraph.training.steps": str(step),
        "nodegraph.description": description,
    }


def model_metadata(scale: float, shift: float, step: int) -> dict[str, str]:
    description = (
        "nodegraph shapes demo, FLUX layout: a tiny FLUX.1-schnell-architecture transformer (BFL keys, "
        f"hidden {FLUX_CONFIG.hidden_size}, {FLUX_CONFIG.depth} double + {FLUX_CONFIG.depth_single_blocks} "
        "single blocks) trained with rectified flow on 64x64 images of one coloured shape on a plain "
        "background; use with the demo's CLIP-L, T5 and ae files. Prompts like 'a small red circle in the "
        "top left on a blue background'.")
    return flow_metadata("flux-schnell", FLOW_SHIFT, scale, shift, step, description)


def runtime_objects(model: FluxTransformer, t5: T5Encoder, t5_tok: T5Tokenizer, clip, clip_tok, scale, shift):
    """Wrap the training modules in the app's runtime objects (same code path as inference)."""
    rules = rules_for("flux-schnell", model_metadata(scale, shift, 0))
    schedule = FlowSchedule(shift=FLOW_SHIFT)
    fm = FluxModel(model, schedule, rules, torch.device("cpu"), torch.float32)
    text = FluxTextEncoder(clip, t5, clip_tok, t5_tok, rules, torch.device("cpu"), t5_min_tokens=T5_MIN_TOKENS)
    vae = VAEModel(load_ae(scale, shift), torch.device("cpu"), torch.float32)
    return fm, text, vae


# ----------------------------------------------------------------------------- the flow recipe (train_sd3 uses it too)


def flow_training_set(data: dict, scale: float, shift: float, edge_weight: float):
    """(normalised latents, attrs, outline loss weights, held-out combinations, draw probabilities) of a
    :func:`latent_set`: every position cell equally likely, the held-out combinations never drawn."""
    latents = (data["latents"] - shift) * scale
    attrs = data["attrs"]
    pixel_w = outline_weights(data["masks"], edge_weight, latents.shape[-1])
    held = {held_out_combo(a) for _, a in held_out_prompts()}
    return latents, attrs, pixel_w, held, sampling_weights(attrs, held)


def flow_batch(latents: torch.Tensor, attrs: list[dict], probs: np.ndarray, batch: int, rng: np.random.Generator,
               gen: torch.Generator, flow_shift: float):
    """One rectified-flow batch: (indices, captions, sigmas, x_t, velocity target).

    Captions name a size and a position with probability :data:`CAPTION_WORD_PROB` each, 10 % are
    empty; the latents fill the used channels of the ae's 16; sigmas are logit-normal, shifted by
    ``flow_shift``; ``x_t = (1 - s) x0 + s noise``, target ``noise - x0``.
    """
    idx = rng.choice(len(latents), batch, p=probs)
    caps = [caption_for(attrs[i], rng, with_size=bool(rng.random() < CAPTION_WORD_PROB),
                        with_position=bool(rng.random() < CAPTION_WORD_PROB))
            if rng.random() >= EMPTY_CAPTION_PROB else "" for i in idx]  # fmt: skip
    x0 = torch.zeros(batch, LATENT_CHANNELS, *latents.shape[-2:])
    x0[:, :USED_CHANNELS] = latents[idx]
    u = torch.randn(batch, generator=gen).sigmoid()
    sig = flow_shift * u / (1 + (flow_shift - 1) * u)
    noise = torch.randn(x0.shape, generator=gen)
    sv = sig.view(-1, 1, 1, 1)
    x_t = (1 - sv) * x0 + sv * noise
    return idx, caps, sig, x_t, noise - x0


def flow_loss(pred: torch.Tensor, target: torch.Tensor, pixel_w: torch.Tensor) -> torch.Tensor:
    """Outline-weighted MSE over the used latent channels (the others are cut off)."""
    k = USED_CHANNELS
    return (F.mse_loss(pred[:, :k], target[:, :k], reduction="none") * pixel_w).mean()


def log_evals(objs, step: int) -> None:
    """The training-time check of the EMA model: 12 test prompts and the 40 held-out prompts, 1 seed each."""
    imgs = sample_images(*objs, EVAL_PROMPTS, (0,), cfg=DEFAULTS["cfg"], scheduler=DEFAULTS["scheduler"])
    log(f"step {step} eval (EMA, 12 prompts x 1 seed): {grade(imgs, EVAL_PROMPTS, (0,))}")
    log(f"step {step} held-out positions/sizes (40 x 1): "
        f"{evaluate_positions(*objs, cfg=DEFAULTS['cfg'], scheduler=DEFAULTS['scheduler'])}")


def grade_files(model, clip, vae, position_seeds: tuple[int, ...]) -> None:
    """Log the scores of loaded files at their own defaults: 12 prompts x 3 seeds, 40 held-out x seeds."""
    from training.common import EVAL_SEEDS

    r = model.rules
    imgs = sample_images(model, clip, vae, EVAL_PROMPTS, EVAL_SEEDS, cfg=r.default_cfg, steps=r.default_steps,
                         scheduler=r.default_scheduler)
    log(f"12 prompts x 3 seeds: {grade(imgs, EVAL_PROMPTS, EVAL_SEEDS)}")
    res = evaluate_positions(model, clip, vae, seeds=position_seeds, cfg=r.default_cfg, scheduler=r.default_scheduler)
    log(f"held-out position/size prompts, 40 x {len(position_seeds)}: {res}")


# ----------------------------------------------------------------------------- training


def main() -> None:
    ap = argparse.ArgumentParser()
    add_common_args(ap, steps=1_000_000, minutes=80.0, lr=8e-4, data=12000, eval_every=500, threads=2)
    ap.add_argument("--export", action="store_true", help="write the demo files from the saved EMA weights")
    ap.add_argument("--evaluate", action="store_true",
                    help="grade the exported files through the app's loaders (12 prompts x 3 seeds, 40 held-out x 5)")
    args = parse_or_run_files(ap, evaluate_files=evaluate_files, export=export)
    if args is None:
        return
    timer = Timer()
    enable_training_attention()
    data = latent_set(args.data)
    scale, shift = data["scale"], data["shift"]
    latents, attrs, pixel_w, held, probs = flow_training_set(data, scale, shift, args.edge_weight)
    clip, clip_tok = load_clip()
    clip.requires_grad_(False)
    t5_tok = T5Tokenizer(T5_TOKENIZER_PATH)
    vocab = t5_tok._tok.get_vocab_size()
    torch.manual_seed(args.seed)
    model = new_transformer(args.seed)
    t5 = new_t5(vocab, args.seed)
    params = list(model.parameters()) + list(t5.parameters())
    ema_model, ema_t5 = copy.deepcopy(model).requires_grad_(False), copy.deepcopy(t5).requires_grad_(False)
    trainer = Trainer(args, WORK / "flux.pt", {"model": model, "t5": t5, "ema_model": ema_model, "ema_t5": ema_t5},
                      params, timer, warmup=200, log_every=50, save_every=200,
                      extra={"scale": scale, "shift": shift, "vocab": vocab})
    trainer.resume()
    gen = trainer.gen
    log(f"transformer {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M, T5 "
        f"{sum(p.numel() for p in t5.parameters()) / 1e6:.3f} M params; scale {scale:.4f} shift {shift:.4f}; "
        f"{len(held)} held-out combinations")

    def evaluate() -> None:
        model.eval()
        log_evals(runtime_objects(ema_model, ema_t5, t5_tok, clip, clip_tok, scale, shift), trainer.step)
        model.train()

    pooled_cache: dict[str, torch.Tensor] = {}

    def pooled(caps: list[str]) -> torch.Tensor:
        with torch.no_grad():
            for c in caps:
                if c not in pooled_cache:
                    pooled_cache[c] = clip_pooled(clip, clip_tok, c)[0]
        return torch.stack([pooled_cache[c] for c in caps])

    rng = np.random.default_rng(args.seed + trainer.step)
    k = USED_CHANNELS
    model.train()
    t5.train()

    def batch_loss() -> torch.Tensor:
        idx, caps, sig, x_t, target = flow_batch(latents, attrs, probs, args.batch, rng, gen, FLOW_SHIFT)
        ids = torch.tensor([_t5_tokens(t5_tok, c, T5_MIN_TOKENS)[0] for c in caps], dtype=torch.long)
        pred = model(x_t, sig, t5(ids), pooled(caps))
        return flow_loss(pred, target, pixel_w[idx])

    def cut_unused_grads() -> None:
        model.img_in.weight.grad[:, 4 * k :] = 0
        model.final_layer.linear.weight.grad[4 * k :] = 0
        model.final_layer.linear.bias.grad[4 * k :] = 0

    # weight decay of exact zeros is zero; cutting the channels after each step guards against drift
    trainer.run(batch_loss, evaluate, [(ema_model, model), (ema_t5, t5)], after_backward=cut_unused_grads,
                after_step=lambda: cut_unused_channels(model))

def evaluate_files(position_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)) -> None:
    """The shipped files' scores, loaded as Load Diffusion Model / DualCLIPLoader / Load VAE load them."""
    from nodes.diffusion.checkpoint import load_vae_file
    from nodes.diffusion.split_files import flux_text_encoder, load_diffusion_model_file, load_text_encoder_part

    model = load_diffusion_model_file(FLUX_MODEL_PATH)
    clip = flux_text_encoder([load_text_encoder_part(CLIP_L_PATH), load_text_encoder_part(T5_PATH)], "cpu")
    vae = load_vae_file(AE_PATH)
    grade_files(model, clip, vae, position_seeds)

def export() -> None:
    """Write the four demo files (fp16 safetensors, BFL / HF T5 / ae layouts) from the EMA weights."""
    from safetensors.torch import save_file

    s = load_work(WORK / "flux.pt")
    export_fixed_files()

    def fp16(sd: dict) -> dict:
        return {k: v.detach().to(torch.float16).contiguous() for k, v in sd.items()}

    def write(path, sd, meta) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file(fp16(sd), str(tmp), metadata=meta)
        tmp.chmod(0o644)  # package data: readable by everyone (the work folder's umask is private)
        tmp.replace(path)
        log(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")

    write(FLUX_MODEL_PATH, s["ema_model"], model_metadata(s["scale"], s["shift"], s["step"]))
    write(T5_PATH, s["ema_t5"], {"nodegraph.t5.min_tokens": str(T5_MIN_TOKENS),
                                 "nodegraph.training.steps": str(s["step"]),
                                 "nodegraph.description": "nodegraph shapes demo: a 2-layer T5 v1.1-layout encoder "
                                 "trained with the FLUX demo; tokenizer beside it"})  # fmt: skip
    write(AE_PATH, ae_state(), {"nodegraph.vae.scaling_factor": f"{s['scale']:.6f}",
                                "nodegraph.vae.shift_factor": f"{s['shift']:.6f}",
                                "nodegraph.description": "nodegraph shapes demo: the UNet demo's VAE converted "
                                "exactly to the FLUX ae layout (16 latent channels, 4 used)"})  # fmt: skip


if __name__ == "__main__":
    main()
