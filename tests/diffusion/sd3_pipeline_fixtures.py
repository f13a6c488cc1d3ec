"""Tiny SD3.5 split-file sets (MMDiT, CLIP-L, CLIP-G, T5 + tokenizer, 16-channel VAE) and their graph.

Every file is in the layout users download: the MMDiT in Stability's keys (``joint_blocks.N...``,
optionally under ``model.diffusion_model.``), the CLIPs and T5 in Hugging Face naming (with
``text_projection``, as SD3's clip_l/clip_g files), the VAE in the ``ae`` layout (no quant convs,
like SD3's and FLUX's).  The MMDiT comes from a random diffusers ``SD3Transformer2DModel``
(converted to Stability keys) so diffusers' pipeline is the reference on the same numbers.
Widths: CLIP-L 64 + CLIP-G 128 = 192 = the T5 width = the MMDiT's context width, so the
zero-padding SD3 does (2048 -> 4096) is exercised as a no-op here and by a missing T5.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from nodegraph import Graph
from tests.diffusion.flux_fixtures import randomize_
from tests.diffusion.flux_pipeline_fixtures import flux_vae_sd, t5_tokenizer_json
from tests.diffusion.text_fixtures import make_hf_clip_sd

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CLIP_L_WIDTH, CLIP_G_WIDTH = 64, 128
T5_WIDTH = CLIP_L_WIDTH + CLIP_G_WIDTH
T5_SHAPE = dict(d_model=T5_WIDTH, d_kv=16, d_ff=96, num_layers=2, num_heads=4, relative_attention_num_buckets=32,
                relative_attention_max_distance=128, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
                use_cache=False)


@dataclass(frozen=True)
class SD3Files:
    """Names (relative to their folders) of one written tiny SD3 set, and the reference transformer."""

    models_dir: Path
    unet: str
    clip_l: str
    clip_g: str
    t5: str
    vae: str
    transformer: Any  # the diffusers SD3Transformer2DModel the file was written from


def diffusers_mmdit(seed: int = 0) -> Any:
    """A random tiny SD3.5-medium-style transformer (qk-norm, one MMDiT-X layer)."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    model = SD3Transformer2DModel(sample_size=16, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=16,
                                  num_attention_heads=2, joint_attention_dim=T5_WIDTH, caption_projection_dim=32,
                                  pooled_projection_dim=CLIP_L_WIDTH + CLIP_G_WIDTH, out_channels=16,
                                  pos_embed_max_size=16, qk_norm="rms_norm", dual_attention_layers=(0,))
    return randomize_(model, seed).eval()


def reference_t5(vocab_size: int, seed: int) -> Any:
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    return randomize_(T5EncoderModel(T5Config(vocab_size=vocab_size, **T5_SHAPE)), seed).eval()


def write_sd3_files(models_dir: Path, *, seed: int = 0, prefixed: bool = True) -> SD3Files:
    """Write a tiny SD3 set into ``models_dir`` (ComfyUI's folders) and return its names."""
    from nodes.diffusion.models.mmdit import convert_diffusers_mmdit_to_original

    models_dir = Path(models_dir)
    for sub in ("diffusion_models", "text_encoders", "vae"):
        (models_dir / sub).mkdir(parents=True, exist_ok=True)
    transformer = diffusers_mmdit(seed)
    prefix = "model.diffusion_model." if prefixed else ""
    sd = {prefix + k: v.contiguous() for k, v in convert_diffusers_mmdit_to_original(transformer.state_dict()).items()}
    unet = "tiny_sd3.5_medium.safetensors"
    save_file(sd, os.fspath(models_dir / "diffusion_models" / unet))
    td = models_dir / "text_encoders"
    save_file(make_hf_clip_sd("", width=CLIP_L_WIDTH, layers=2, seed=seed + 1, projection=CLIP_L_WIDTH),
              os.fspath(td / "tiny_clip_l.safetensors"))
    save_file(make_hf_clip_sd("", width=CLIP_G_WIDTH, layers=2, seed=seed + 2, projection=CLIP_G_WIDTH),
              os.fspath(td / "tiny_clip_g.safetensors"))
    tok = t5_tokenizer_json(td / "_t5tok")
    (td / "tiny_t5xxl.tokenizer.json").write_text(tok.read_text())
    vocab = json.loads(tok.read_text())["model"]["vocab"]
    t5_sd = {k: v.clone().contiguous() for k, v in reference_t5(len(vocab), seed + 3).state_dict().items()}
    t5_sd.pop("encoder.embed_tokens.weight", None)
    save_file(t5_sd, os.fspath(td / "tiny_t5xxl.safetensors"))
    vae = "tiny_ae16.safetensors"  # a name that does not tell SD3 from FLUX: decode follows the model family
    save_file(flux_vae_sd(seed + 4), os.fspath(models_dir / "vae" / vae))
    return SD3Files(models_dir, unet, "tiny_clip_l.safetensors", "tiny_clip_g.safetensors",
                    "tiny_t5xxl.safetensors", vae, transformer)


def sd3_graph(files: SD3Files, *, prompt: str = "a red circle in the top left", negative: str = "", seed: int = 42,
              steps: int = 4, cfg: float = 4.5, width: int = 64, height: int = 48, shift: float = 3.0,
              clip_names: tuple[str | None, str | None, str | None] | None = None) -> Graph:
    """UNETLoader + TripleCLIPLoader + VAELoader -> ModelSamplingSD3 -> CLIP Text Encode x2 -> KSampler
    (simple scheduler) -> VAE Decode.  Node ids: unet, msd3, clip, vae, positive, negative, latent,
    sampler, decode."""
    names = clip_names if clip_names is not None else (files.clip_l, files.clip_g, files.t5)
    g = Graph()
    g.add_node("diffusion.unet_loader", {"unet_name": files.unet, "weight_dtype": "default"}, id="unet")
    g.add_node("diffusion.model_sampling_sd3", {"shift": shift}, id="msd3")
    g.add_node("diffusion.triple_clip_loader",
               {f"clip_name{i + 1}": n for i, n in enumerate(names) if n is not None}, id="clip")
    g.add_node("diffusion.vae_loader", {"vae_name": files.vae}, id="vae")
    g.add_node("diffusion.text_encode", {"text": prompt}, id="positive")
    g.add_node("diffusion.text_encode", {"text": negative}, id="negative")
    g.add_node("diffusion.empty_sd3_latent", {"width": width, "height": height, "batch_size": 1}, id="latent")
    g.add_node("diffusion.ksampler", {"seed": seed, "steps": steps, "cfg": cfg, "sampler_name": "euler",
                                      "scheduler": "simple", "denoise": 1.0}, id="sampler")
    g.add_node("diffusion.vae_decode", {}, id="decode")
    g.connect("unet", "MODEL", "msd3", "model")
    g.connect("msd3", "MODEL", "sampler", "model")
    for n in ("positive", "negative"):
        g.connect("clip", "CLIP", n, "clip")
    g.connect("positive", "CONDITIONING", "sampler", "positive")
    g.connect("negative", "CONDITIONING", "sampler", "negative")
    g.connect("latent", "LATENT", "sampler", "latent_image")
    g.connect("sampler", "LATENT", "decode", "samples")
    g.connect("vae", "VAE", "decode", "vae")
    return g
