"""Tiny Z-Image split-file sets (DiT, Qwen3 + tokenizer.json, FLUX VAE) and their graph.

Every file is in the layout users download: the DiT in ComfyUI's keys (``layers.N.attention.qkv``
..., under ``model.diffusion_model.`` or bare), the Qwen3 encoder in Hugging Face naming
(``model.layers.N.self_attn.q_proj`` ..., as ``qwen_3_4b.safetensors``) with its byte-level BPE
``tokenizer.json`` beside it, the VAE in FLUX's ``ae`` layout.  The DiT comes from a random
diffusers ``ZImageTransformer2DModel`` and the encoder from a random transformers
``Qwen3ForCausalLM``, so diffusers' ZImagePipeline can be the reference on the very same numbers.
The tokenizer is trained here (the real one is 11 MB and cannot be downloaded in tests).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from nodegraph import Graph
from tests.diffusion.flux_fixtures import randomize_
from tests.diffusion.flux_pipeline_fixtures import flux_vae_sd

os.environ.setdefault("HF_HUB_OFFLINE", "1")

QWEN_WIDTH = 64
QWEN_SHAPE = dict(hidden_size=QWEN_WIDTH, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-6, max_position_embeddings=512,
                  tie_word_embeddings=False)
#: Qwen3's own RoPE base (not stored in the weights; the loader assumes it, as for the real Qwen3-4B).
QWEN_THETA = 1_000_000.0
#: The part of Qwen3's chat template a single user turn goes through (messages loop for a user message,
#: then the generation prompt with its ``enable_thinking`` switch), copied from Qwen3's tokenizer_config.
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}{%- if message.role == \"user\" %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n"
    "    {%- if enable_thinking is defined and enable_thinking is false %}\n"
    "        {{- '<think>\\n\\n</think>\\n\\n' }}\n    {%- endif %}\n{%- endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
CORPUS = ["a red circle in the top left", "a small blue square on a white background", "user assistant",
          "two green triangles at the bottom right", "a photo of a cat, oil painting, high detail"] * 20


@dataclass(frozen=True)
class ZImageFiles:
    """Names (relative to their folders) of one written tiny Z-Image set, and the reference modules."""

    models_dir: Path
    unet: str
    qwen3: str
    tokenizer: str
    vae: str
    transformer: Any  # the diffusers ZImageTransformer2DModel the file was written from


def qwen3_tokenizer_json(path: Path) -> Path:
    """Train a tiny byte-level BPE with Qwen's special tokens and save it as a tokenizer.json."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=360, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def reference_qwen3(vocab_size: int, seed: int) -> Any:
    """A random tiny transformers ``Qwen3ForCausalLM`` (grouped-query heads, head dim != width/heads)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=vocab_size, **QWEN_SHAPE,
                      rope_parameters={"rope_type": "default", "rope_theta": QWEN_THETA})
    return randomize_(Qwen3ForCausalLM(cfg), seed).eval()


def diffusers_zimage(seed: int = 0) -> Any:
    """A random tiny ``ZImageTransformer2DModel`` taking the tiny Qwen3's features (pad tokens non-zero)."""
    from diffusers import ZImageTransformer2DModel

    torch.manual_seed(seed)
    model = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=64, n_layers=2, n_refiner_layers=1,
        n_heads=2, n_kv_heads=2, qk_norm=True, cap_feat_dim=QWEN_WIDTH, axes_dims=[8, 12, 12],
        axes_lens=[1024, 64, 64])
    randomize_(model, seed + 10)
    with torch.no_grad():
        model.x_pad_token.normal_(generator=torch.Generator().manual_seed(seed + 11))
        model.cap_pad_token.normal_(generator=torch.Generator().manual_seed(seed + 12))
    return model.eval()


def write_zimage_files(models_dir: Path, *, seed: int = 0, prefixed: bool = True,
                       layout: str = "comfy") -> ZImageFiles:
    """Write a tiny Z-Image set into ``models_dir`` (ComfyUI's folders) and return its names."""
    from nodes.diffusion.models.zimage import convert_diffusers_zimage_to_comfy

    models_dir = Path(models_dir)
    for sub in ("diffusion_models", "text_encoders", "vae"):
        (models_dir / sub).mkdir(parents=True, exist_ok=True)
    transformer = diffusers_zimage(seed)
    sd = transformer.state_dict()
    if layout == "comfy":
        sd = convert_diffusers_zimage_to_comfy(sd)
    prefix = "model.diffusion_model." if prefixed else ""
    unet = f"tiny_z_image_turbo_{layout}.safetensors"
    save_file({prefix + k: v.contiguous() for k, v in sd.items()}, os.fspath(models_dir / "diffusion_models" / unet))
    td = models_dir / "text_encoders"
    tok = qwen3_tokenizer_json(td / "tiny_qwen_3_4b.tokenizer.json")
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(tok)).get_vocab_size()
    qwen = reference_qwen3(vocab, seed + 1)
    save_file({k: v.clone().contiguous() for k, v in qwen.state_dict().items()},
              os.fspath(td / "tiny_qwen_3_4b.safetensors"))
    vae = "tiny_ae.safetensors"
    save_file(flux_vae_sd(seed + 2), os.fspath(models_dir / "vae" / vae))
    return ZImageFiles(models_dir, unet, "tiny_qwen_3_4b.safetensors", tok.name, vae, transformer)


def zimage_graph(files: ZImageFiles, *, prompt: str = "a red circle in the top left", negative: str | None = None,
                 seed: int = 42, steps: int = 4, cfg: float = 1.0, width: int = 64, height: int = 48,
                 shift: float = 3.0, sampler: str = "res_multistep", scheduler: str = "simple") -> Graph:
    """The official Z-Image workflow's shape: UNETLoader + CLIPLoader (lumina2) + VAELoader ->
    ModelSamplingAuraFlow -> CLIP Text Encode, negative = ConditioningZeroOut of it (or a second
    text encode when ``negative`` is given) -> KSampler -> VAE Decode.  Node ids: unet, aura, clip,
    vae, positive, negative, latent, sampler, decode."""
    g = Graph()
    g.add_node("diffusion.unet_loader", {"unet_name": files.unet, "weight_dtype": "default"}, id="unet")
    g.add_node("diffusion.model_sampling_aura_flow", {"shift": shift}, id="aura")
    g.add_node("diffusion.clip_loader", {"clip_name": files.qwen3, "type": "lumina2"}, id="clip")
    g.add_node("diffusion.vae_loader", {"vae_name": files.vae}, id="vae")
    g.add_node("diffusion.text_encode", {"text": prompt}, id="positive")
    g.connect("clip", "CLIP", "positive", "clip")
    if negative is None:
        g.add_node("diffusion.conditioning_zero_out", {}, id="negative")
        g.connect("positive", "CONDITIONING", "negative", "conditioning")
    else:
        g.add_node("diffusion.text_encode", {"text": negative}, id="negative")
        g.connect("clip", "CLIP", "negative", "clip")
    g.add_node("diffusion.empty_sd3_latent", {"width": width, "height": height, "batch_size": 1}, id="latent")
    g.add_node("diffusion.ksampler", {"seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler,
                                      "scheduler": scheduler, "denoise": 1.0}, id="sampler")
    g.add_node("diffusion.vae_decode", {}, id="decode")
    g.connect("unet", "MODEL", "aura", "model")
    g.connect("aura", "MODEL", "sampler", "model")
    g.connect("positive", "CONDITIONING", "sampler", "positive")
    g.connect("negative", "CONDITIONING", "sampler", "negative")
    g.connect("latent", "LATENT", "sampler", "latent_image")
    g.connect("sampler", "LATENT", "decode", "samples")
    g.connect("vae", "VAE", "decode", "vae")
    return g
