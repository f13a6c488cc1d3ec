"""The FLUX-layout shapes demo: its file set, architecture constants, and the parts reused from the UNet demo.

The demo is four files in ComfyUI's split-file folders, each in the layout the
real FLUX.1 files use, so they go through the app's ordinary split loaders:

* ``diffusion_models/nodegraph-shapes-flux-v1.safetensors``: a tiny FLUX.1 transformer
  (BFL keys, schnell-style: no guidance embedding), trained by ``training/train_flux.py``;
* ``text_encoders/nodegraph-shapes-clip-l-v1.safetensors``: the UNet demo's text encoder
  (width 128, 3 layers, GELU) in the HF CLIP-L key layout, frozen; FLUX reads its pooled
  (final-norm EOS) feature through ``vector_in``;
* ``text_encoders/nodegraph-shapes-t5-v1.safetensors`` + ``...t5-v1.tokenizer.json``: a tiny
  T5 v1.1-layout encoder trained jointly with the transformer, and a SentencePiece-unigram
  tokenizer (``tokenizers`` package) fitted to the dataset's caption vocabulary;
* ``vae/nodegraph-shapes-flux-ae-v1.safetensors``: the UNet demo's VAE converted *exactly*
  to the FLUX ``ae`` layout (no quant convs, 16 latent channels): ``quant_conv`` and
  ``post_quant_conv`` (1x1) are folded into the encoder's ``conv_out``, and the latent is
  redefined as what ``post_quant_conv`` used to output, so the decoder's ``conv_in`` reads it
  directly (no border effect: nothing is folded into a padded 3x3 conv's input).  The 12
  extra latent channels are constant zero in the encoder's mean and have zero decoder weights.

Everything here is torch + tokenizers; the dataset modules stay torch-free.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from nodes.diffusion.models.flux import FluxConfig, axes_dim_for_head_dim
from nodes.diffusion.models.t5 import T5Config
from training.captions import POSITION_PHRASES, TEMPLATES
from training.common import CHECKPOINT_PATH, DEMO_DIR, TEXT_ACTIVATION
from training.palette import COLOR_NAMES

FLUX_MODEL_PATH = DEMO_DIR / "diffusion_models" / "nodegraph-shapes-flux-v1.safetensors"
CLIP_L_PATH = DEMO_DIR / "text_encoders" / "nodegraph-shapes-clip-l-v1.safetensors"
T5_PATH = DEMO_DIR / "text_encoders" / "nodegraph-shapes-t5-v1.safetensors"
T5_TOKENIZER_PATH = DEMO_DIR / "text_encoders" / "nodegraph-shapes-t5-v1.tokenizer.json"
AE_PATH = DEMO_DIR / "vae" / "nodegraph-shapes-flux-ae-v1.safetensors"
FLUX_DEMO_FILES = (FLUX_MODEL_PATH, CLIP_L_PATH, T5_PATH, T5_TOKENIZER_PATH, AE_PATH)

LATENT_CHANNELS = 16  # FLUX ae layout
USED_CHANNELS = 4  # channels the converted VAE actually uses (the UNet demo's 4-channel latent)
# Short prompts are padded to 16 T5 tokens (the longest caption is 15 + </s>) instead of FLUX's 256:
# 16x fewer text tokens per step.  The T5 file says so in its metadata (nodegraph.t5.min_tokens),
# which the split T5 loader honours.
T5_MIN_TOKENS = 16
T5_WIDTH = 128
T5_CONFIG_KW = dict(d_model=T5_WIDTH, d_kv=32, num_heads=4, d_ff=256, num_layers=2, num_buckets=32,
                    max_distance=128, gated=True)  # fmt: skip
HIDDEN = 128
HEAD_DIM = 32
FLUX_CONFIG = FluxConfig(
    in_channels=4 * LATENT_CHANNELS,
    hidden_size=HIDDEN,
    num_heads=HIDDEN // HEAD_DIM,
    depth=2,
    depth_single_blocks=2,
    context_in_dim=T5_WIDTH,
    vec_in_dim=128,  # the demo CLIP's width
    mlp_ratio=4.0,
    axes_dim=axes_dim_for_head_dim(HEAD_DIM),
    qkv_bias=True,
    guidance_embed=False,
    out_channels=4 * LATENT_CHANNELS,
)
# Model sampling: a fixed flow shift, as for schnell (ModelSamplingFlux's resolution rule would give
# exp(0.5) at 64 tokens; the demo is trained and sampled with the same fixed shift).
FLOW_SHIFT = 2.0


def t5_config(vocab_size: int) -> T5Config:
    return T5Config(vocab_size=vocab_size, **T5_CONFIG_KW)


# ----------------------------------------------------------------------------- VAE conversion


def _sd_vae_state() -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    prefix = "first_stage_model."
    with safe_open(str(CHECKPOINT_PATH), "pt") as f:
        return {k[len(prefix):]: f.get_tensor(k).float() for k in f.keys() if k.startswith(prefix)}


def convert_sd_vae_to_ae(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The SD-layout 4-channel VAE as a FLUX ``ae``-layout 16-channel VAE computing the same images.

    New latent ``z' = P @ mean + p`` (P, p = ``post_quant_conv``), so ``decoder.conv_in`` reads ``z'``
    unchanged; the encoder's ``conv_out`` absorbs ``quant_conv`` and ``P`` (all affine maps after a
    conv, so folding them into its weights and bias is exact).  Log-variance channels keep the
    ``quant_conv`` output (unused by encoding, which takes the mean).  Latent channels 4..15: zero.
    """
    out = {k: v for k, v in sd.items() if not k.startswith(("quant_conv.", "post_quant_conv.", "encoder.conv_out.",
                                                           "decoder.conv_in."))}
    z = sd["post_quant_conv.weight"].shape[0]
    q_w, q_b = sd["quant_conv.weight"][:, :, 0, 0], sd["quant_conv.bias"]  # (2z, 2z)
    p_w, p_b = sd["post_quant_conv.weight"][:, :, 0, 0], sd["post_quant_conv.bias"]  # (z, z)
    w, b = sd["encoder.conv_out.weight"], sd["encoder.conv_out.bias"]  # (2z, C, 3, 3)
    w_q = torch.einsum("oi,ichw->ochw", q_w, w)
    b_q = q_w @ b + q_b
    mean_w = torch.einsum("oi,ichw->ochw", p_w, w_q[:z])
    mean_b = p_w @ b_q[:z] + p_b
    c = LATENT_CHANNELS
    enc_w = torch.zeros(2 * c, *w.shape[1:])
    enc_b = torch.zeros(2 * c)
    enc_w[:z], enc_b[:z] = mean_w, mean_b
    enc_w[c : c + z], enc_b[c : c + z] = w_q[z:], b_q[z:]
    out["encoder.conv_out.weight"], out["encoder.conv_out.bias"] = enc_w, enc_b
    d_w = sd["decoder.conv_in.weight"]  # (C, z, 3, 3)
    dec_w = torch.zeros(d_w.shape[0], c, *d_w.shape[2:])
    dec_w[:, :z] = d_w
    out["decoder.conv_in.weight"], out["decoder.conv_in.bias"] = dec_w, sd["decoder.conv_in.bias"]
    return out


def ae_state() -> dict[str, torch.Tensor]:
    """The converted VAE state (float32, from the shipped UNet demo checkpoint)."""
    return convert_sd_vae_to_ae(_sd_vae_state())


def clip_l_state() -> dict[str, torch.Tensor]:
    """The UNet demo's text encoder under HF CLIP text-model keys (``text_model.*``), as shipped (fp16)."""
    from safetensors import safe_open

    prefix = "cond_stage_model.transformer."
    with safe_open(str(CHECKPOINT_PATH), "pt") as f:
        return {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}


def clip_l_metadata() -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(CHECKPOINT_PATH), "pt") as f:
        meta = f.metadata() or {}
    return {"nodegraph.clip.activation": TEXT_ACTIVATION,
            "nodegraph.tokenizer.max_merges": meta["nodegraph.tokenizer.max_merges"],
            "nodegraph.description": "nodegraph shapes demo: the UNet demo's 3-layer width-128 text encoder "
                                     "(GELU, pruned CLIP vocabulary) in the CLIP-L key layout, for the FLUX "
                                     "demo's pooled vector"}  # fmt: skip


# ----------------------------------------------------------------------------- T5 tokenizer

# Words a user may write that the captions never use (synonyms the caption parser accepts, and a few more).
EXTRA_WORDS = ("tiny little big huge medium upper lower middle centre disc disk corner image photo of the "
               "with and in on at a an left right top bottom center background picture against shape "
               "colored coloured dark light bright object one single plain")


def _words() -> list[str]:
    """Every word the caption templates, colours, shapes, sizes and positions use, plus :data:`EXTRA_WORDS`."""
    text = " ".join([*TEMPLATES, *POSITION_PHRASES.values(), *COLOR_NAMES, "circle square triangle star small large",
                     EXTRA_WORDS])
    return sorted(set(re.findall(r"[a-z]+", text.replace("{obj}", " ").replace("{bg}", " ").replace("{pos}", " "))))


def build_t5_tokenizer(path: Path) -> None:
    """A SentencePiece-unigram ``tokenizer.json`` (T5's model type and pre-tokenizer; ``<pad>`` 0,
    ``</s>`` 1, ``<unk>`` 2), written atomically.

    Built directly rather than trained (a unigram trainer on a few hundred distinct words keeps
    sub-word pieces): every caption word is one whole-word piece (``▁red``) with a high score;
    letters, digits and punctuation (with and without ``▁``) are low-score pieces, so any other
    word is spelled out instead of becoming ``<unk>``.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    words = _words()
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789-,.!?'()")
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -8.0)]
    vocab += [("\u2581" + w, -3.0) for w in words] + [(w, -4.0) for w in words]  # "upper-left"
    vocab += [("\u2581" + c, -10.0) for c in chars] + [(c, -10.0) for c in chars]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tok.save(str(tmp))
    json.loads(tmp.read_text())  # well-formed
    tmp.replace(path)
