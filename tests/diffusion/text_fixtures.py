"""Shared fixtures for the text-encoder tests: tiny CLIP checkpoints in the original layouts.

Checkpoints are random and tiny (width 64, 2 layers) but keep the real 49,408-token
vocabulary so that the reference ``transformers`` models (whose config defaults to
CLIP's EOS id 49407 for pooling) behave exactly as they do on real weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from nodes.diffusion.text.tokenizer import ClipTokenizer

VOCAB = 49408
MAX_POS = 77
# Rounding bound for parity of these tiny encoders (see tests/tolerance.py): the longest reduction is the
# MLP's 4 * width inputs; errors add along the residual stream from attention + MLP per layer (up to 3 layers
# here) plus the final norm and projection.
CLIP_ROUNDING = {"reduction": 4 * 64, "depth": 2 * 3 + 2}


def write_hf_tokenizer_files(tok: ClipTokenizer, directory: Path) -> tuple[Path, Path]:
    """Write ``vocab.json`` / ``merges.txt`` for ``transformers.CLIPTokenizer`` from our tokenizer's data."""
    vocab_path = directory / "vocab.json"
    merges_path = directory / "merges.txt"
    vocab_path.write_text(json.dumps(tok.vocab, ensure_ascii=False), encoding="utf-8")
    merges_path.write_text(tok.merges_text(), encoding="utf-8")
    return vocab_path, merges_path


def _rand(gen: torch.Generator, *shape: int, scale: float = 0.05) -> torch.Tensor:
    return torch.randn(*shape, generator=gen) * scale


def _ln(gen: torch.Generator, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    return 1.0 + _rand(gen, width, scale=0.1), _rand(gen, width, scale=0.1)


def make_hf_clip_sd(
    prefix: str,
    *,
    width: int = 64,
    layers: int = 2,
    seed: int = 0,
    projection: int | None = None,
    position_ids: bool = False,
) -> dict[str, torch.Tensor]:
    """A random CLIP text model in HF naming under ``prefix`` (e.g. ``cond_stage_model.transformer.``)."""
    g = torch.Generator().manual_seed(seed)
    p = prefix + "text_model."
    sd: dict[str, torch.Tensor] = {
        p + "embeddings.token_embedding.weight": _rand(g, VOCAB, width, scale=0.5),
        p + "embeddings.position_embedding.weight": _rand(g, MAX_POS, width, scale=0.2),
    }
    if position_ids:
        sd[p + "embeddings.position_ids"] = torch.arange(MAX_POS).unsqueeze(0)
    for i in range(layers):
        lp = f"{p}encoder.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            sd[f"{lp}self_attn.{name}.weight"] = _rand(g, width, width, scale=0.15)
            sd[f"{lp}self_attn.{name}.bias"] = _rand(g, width)
        sd[lp + "layer_norm1.weight"], sd[lp + "layer_norm1.bias"] = _ln(g, width)
        sd[lp + "layer_norm2.weight"], sd[lp + "layer_norm2.bias"] = _ln(g, width)
        sd[lp + "mlp.fc1.weight"] = _rand(g, 4 * width, width, scale=0.15)
        sd[lp + "mlp.fc1.bias"] = _rand(g, 4 * width)
        sd[lp + "mlp.fc2.weight"] = _rand(g, width, 4 * width, scale=0.08)
        sd[lp + "mlp.fc2.bias"] = _rand(g, width)
    sd[p + "final_layer_norm.weight"], sd[p + "final_layer_norm.bias"] = _ln(g, width)
    if projection is not None:
        sd[prefix + "text_projection.weight"] = _rand(g, projection, width, scale=0.15)
    return sd


def make_openclip_sd(
    prefix: str, *, width: int = 64, layers: int = 2, seed: int = 1, projection: int | None = 32
) -> dict[str, torch.Tensor]:
    """A random OpenCLIP text tower under ``prefix`` (e.g. ``conditioner.embedders.1.model.``)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {
        prefix + "token_embedding.weight": _rand(g, VOCAB, width, scale=0.5),
        prefix + "positional_embedding": _rand(g, MAX_POS, width, scale=0.2),
    }
    for i in range(layers):
        lp = f"{prefix}transformer.resblocks.{i}."
        sd[lp + "ln_1.weight"], sd[lp + "ln_1.bias"] = _ln(g, width)
        sd[lp + "attn.in_proj_weight"] = _rand(g, 3 * width, width, scale=0.15)
        sd[lp + "attn.in_proj_bias"] = _rand(g, 3 * width)
        sd[lp + "attn.out_proj.weight"] = _rand(g, width, width, scale=0.15)
        sd[lp + "attn.out_proj.bias"] = _rand(g, width)
        sd[lp + "ln_2.weight"], sd[lp + "ln_2.bias"] = _ln(g, width)
        sd[lp + "mlp.c_fc.weight"] = _rand(g, 4 * width, width, scale=0.15)
        sd[lp + "mlp.c_fc.bias"] = _rand(g, 4 * width)
        sd[lp + "mlp.c_proj.weight"] = _rand(g, width, 4 * width, scale=0.08)
        sd[lp + "mlp.c_proj.bias"] = _rand(g, width)
    sd[prefix + "ln_final.weight"], sd[prefix + "ln_final.bias"] = _ln(g, width)
    if projection is not None:
        # OpenCLIP stores the projection as [width, embed_dim] and applies ``x @ text_projection``.
        sd[prefix + "text_projection"] = _rand(g, width, projection, scale=0.15)
    return sd


def strip_prefix(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def grow_embedding(path: Path, key: str, rows: int) -> None:
    """Rewrite the text-encoder file ``path`` with its token embedding ``key`` grown to ``rows`` rows (new rows
    random, at the old rows' spread): a tiny encoder that a real release's vocabulary size identifies."""
    from safetensors.torch import load_file, save_file

    sd = load_file(path)
    table = sd[key]
    extra = torch.randn(rows - table.shape[0], table.shape[1], generator=torch.Generator().manual_seed(0),
                        dtype=torch.float32).to(table.dtype) * table.std()
    save_file({**sd, key: torch.cat([table, extra])}, str(path))
