"""Tiny FLUX.1 split-file sets (diffusion model, CLIP-L, T5 + tokenizer, 16-channel VAE) and their graphs.

Every file is in the layout users download: the transformer in BFL keys
(``double_blocks.N.img_attn.qkv.weight`` ...) or diffusers keys, CLIP-L and T5
in Hugging Face naming, the VAE in the FLUX ``ae`` layout (no quant convs).
The transformer weights come from a random diffusers ``FluxTransformer2DModel``
(converted to BFL keys), so the diffusers pipeline can be the reference on the
very same numbers; the text encoders are random with transformers' own
classes for the same reason.  The T5 vocabulary is a small unigram model
trained here and written by transformers (the real one cannot be downloaded).
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
from tests.diffusion.flux_fixtures import diffusers_flux, randomize_
from tests.diffusion.text_fixtures import make_hf_clip_sd

os.environ.setdefault("HF_HUB_OFFLINE", "1")

T5_WIDTH = 32
CLIP_WIDTH = 64  # one head of 64, like CLIP-L's heads
T5_CORPUS = [
    "a red circle in the top left",
    "a small blue square on a white background",
    "two green triangles at the bottom right",
    "a large yellow star in the centre of the picture",
    "a photo of a cat, oil painting, high detail",
] * 20


@dataclass(frozen=True)
class FluxFiles:
    """Names (relative to their folders) of one written tiny FLUX set, and the reference modules."""

    models_dir: Path
    unet: str
    clip_l: str
    t5: str
    vae: str
    guidance: bool
    transformer: Any  # the diffusers FluxTransformer2DModel the file was written from


def t5_tokenizer_json(directory: Path) -> Path:
    """Train a tiny SentencePiece-unigram vocabulary and save it the way transformers does."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import T5Tokenizer as HFT5Tokenizer

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=96, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    tok.train_from_iterator(T5_CORPUS, trainer)
    vocab = [tuple(v) for v in json.loads(tok.to_str())["model"]["vocab"]]
    directory.mkdir(parents=True, exist_ok=True)
    HFT5Tokenizer(vocab=vocab, extra_ids=0).save_pretrained(directory)
    return directory / "tokenizer.json"


def reference_t5(vocab_size: int, seed: int = 0) -> Any:
    """A random tiny transformers ``T5EncoderModel`` (v1.1: gated GELU, untied)."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=vocab_size, d_model=T5_WIDTH, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                   relative_attention_num_buckets=32, relative_attention_max_distance=128,
                   feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False)
    return randomize_(T5EncoderModel(cfg), seed).eval()


def flux_vae_sd(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random FLUX ``ae``-layout VAE with 8x downscale (4 levels) and 16 latent channels."""
    from nodes.diffusion.models.vae import FLUX_SCALING_FACTOR, FLUX_SHIFT_FACTOR, AutoencoderKL, VAEConfig

    cfg = VAEConfig(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1, z_channels=16, embed_dim=16,
                    use_quant_conv=False, scaling_factor=FLUX_SCALING_FACTOR, shift_factor=FLUX_SHIFT_FACTOR)
    torch.manual_seed(seed)
    return {k: v.clone().contiguous() for k, v in randomize_(AutoencoderKL(cfg), seed).state_dict().items()}


def flux_bfl_sd(transformer: Any) -> dict[str, torch.Tensor]:
    from nodes.diffusion.models.flux import convert_diffusers_flux_to_bfl

    return {k: v.contiguous() for k, v in convert_diffusers_flux_to_bfl(transformer.state_dict()).items()}


def write_flux_files(models_dir: Path, *, guidance: bool = True, seed: int = 0, layout: str = "bfl",
                     unet_dtype: torch.dtype | None = None) -> FluxFiles:
    """Write a tiny FLUX set into ``models_dir`` (ComfyUI's folders) and return its names."""
    models_dir = Path(models_dir)
    for sub in ("diffusion_models", "text_encoders", "vae"):
        (models_dir / sub).mkdir(parents=True, exist_ok=True)
    variant = "dev" if guidance else "schnell"
    transformer = diffusers_flux(guidance, seed, joint_attention_dim=T5_WIDTH, pooled_projection_dim=CLIP_WIDTH)
    sd = flux_bfl_sd(transformer) if layout == "bfl" else {k: v.contiguous()
                                                           for k, v in transformer.state_dict().items()}
    if unet_dtype is not None:
        sd = {k: v.to(unet_dtype) for k, v in sd.items()}
    unet = f"tiny_flux_{variant}_{layout}.safetensors"
    save_file(sd, os.fspath(models_dir / "diffusion_models" / unet))

    clip = "tiny_clip_l.safetensors"
    save_file(make_hf_clip_sd("", width=CLIP_WIDTH, layers=2, seed=seed + 1),
              os.fspath(models_dir / "text_encoders" / clip))
    t5 = "tiny_t5xxl.safetensors"
    tok = t5_tokenizer_json(models_dir / "text_encoders" / "_t5tok")
    (models_dir / "text_encoders" / "tiny_t5xxl.tokenizer.json").write_text(tok.read_text())
    vocab = json.loads(tok.read_text())["model"]["vocab"]
    ref_t5 = reference_t5(len(vocab), seed + 2)
    t5_sd = {k: v.clone().contiguous() for k, v in ref_t5.state_dict().items()}
    t5_sd.pop("encoder.embed_tokens.weight", None)  # tied to shared.weight; released files store it once
    save_file(t5_sd, os.fspath(models_dir / "text_encoders" / t5))
    vae = "tiny_flux_ae.safetensors"
    save_file(flux_vae_sd(seed + 3), os.fspath(models_dir / "vae" / vae))
    return FluxFiles(models_dir, unet, clip, t5, vae, guidance, transformer)


def flux_graph(files: FluxFiles, *, prompt: str = "a red circle in the top left", seed: int = 42, steps: int = 4,
               width: int = 64, height: int = 48, guidance: float = 3.5, sampler: str = "euler",
               scheduler: str = "simple", weight_dtype: str = "default", shift_for_size: bool = True) -> Graph:
    """UNETLoader + DualCLIPLoader + VAELoader -> CLIP Text Encode -> FluxGuidance -> KSampler (cfg 1,
    ConditioningZeroOut negative) -> VAE Decode.  Node ids: unet, clip, vae, positive, guidance,
    negative, latent, msf (ModelSamplingFlux, if ``shift_for_size``), sampler, decode."""
    g = Graph()
    g.add_node("diffusion.unet_loader", {"unet_name": files.unet, "weight_dtype": weight_dtype}, id="unet")
    g.add_node("diffusion.dual_clip_loader", {"clip_name1": files.clip_l, "clip_name2": files.t5, "type": "flux"},
               id="clip")
    g.add_node("diffusion.vae_loader", {"vae_name": files.vae}, id="vae")
    g.add_node("diffusion.text_encode", {"text": prompt}, id="positive")
    g.add_node("diffusion.flux_guidance", {"guidance": guidance}, id="guidance")
    g.add_node("diffusion.conditioning_zero_out", {}, id="negative")
    g.add_node("diffusion.empty_sd3_latent", {"width": width, "height": height, "batch_size": 1}, id="latent")
    g.add_node("diffusion.ksampler", {"seed": seed, "steps": steps, "cfg": 1.0, "sampler_name": sampler,
                                      "scheduler": scheduler, "denoise": 1.0}, id="sampler")
    g.add_node("diffusion.vae_decode", {}, id="decode")
    g.connect("clip", "CLIP", "positive", "clip")
    g.connect("positive", "CONDITIONING", "guidance", "conditioning")
    g.connect("positive", "CONDITIONING", "negative", "conditioning")
    model_src = "unet"
    if shift_for_size:
        g.add_node("diffusion.model_sampling_flux", {"max_shift": 1.15, "base_shift": 0.5, "width": width,
                                                     "height": height}, id="msf")
        g.connect("unet", "MODEL", "msf", "model")
        model_src = "msf"
    g.connect(model_src, "MODEL", "sampler", "model")
    g.connect("guidance", "CONDITIONING", "sampler", "positive")
    g.connect("negative", "CONDITIONING", "sampler", "negative")
    g.connect("latent", "LATENT", "sampler", "latent_image")
    g.connect("sampler", "LATENT", "decode", "samples")
    g.connect("vae", "VAE", "decode", "vae")
    return g
