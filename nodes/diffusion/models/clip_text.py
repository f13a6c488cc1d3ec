"""CLIP text transformer with Hugging Face parameter names (the SD1/SDXL-CLIP-L checkpoint layout).

Why HF names: SD1 checkpoints (``cond_stage_model.transformer.*``) and SDXL's
CLIP-L (``conditioner.embedders.0.transformer.*``) store exactly these names, so
those load with a prefix strip and ``load_state_dict(sd, assign=True)``. OpenCLIP
towers (SD2's ``cond_stage_model.model.*`` and SDXL's bigG
``conditioner.embedders.1.model.*``) use another naming; :func:`openclip_to_hf`
renames them with tensor *views* (the fused ``in_proj`` is sliced, the projection
transposed), so no weight is copied.

Architecture (identical for all three families apart from size and activation):
token + learned position embeddings, pre-LayerNorm transformer blocks with
causal self-attention, final LayerNorm, optional bias-free text projection.
The forward pass returns the hidden states of every layer so callers can apply
"clip skip" (see :func:`select_hidden`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .loading import DropKeysView, build_on_meta

__all__ = [
    "ClipTextConfig",
    "ClipTextModel",
    "ClipTextOutput",
    "HEAD_DIM",
    "build_clip_from_state_dict",
    "clean_hf_clip_state_dict",
    "infer_clip_config",
    "openclip_to_hf",
    "select_hidden",
]

Activation = Literal["quick_gelu", "gelu"]
#: Head width of every CLIP text tower Stable Diffusion uses (family rule for ``infer_clip_config``).
HEAD_DIM = 64


@dataclass(frozen=True)
class ClipTextConfig:
    """Shape hyper-parameters of a CLIP text tower.

    ``activation``: OpenAI CLIP-L (SD1, SDXL's first encoder) uses ``quick_gelu``;
    OpenCLIP ViT-H (SD2) and ViT-bigG (SDXL) use exact ``gelu``. It cannot be read
    from the weights, so the checkpoint loader passes it by family.
    """

    width: int = 768
    layers: int = 12
    heads: int = 12
    intermediate: int = 3072
    vocab_size: int = 49408
    max_positions: int = 77
    activation: Activation = "quick_gelu"
    projection_dim: int | None = None
    eps: float = 1e-5

    @property
    def eos_id(self) -> int:
        """CLIP's vocabulary layout puts ``<|endoftext|>`` last."""
        return self.vocab_size - 1


@dataclass
class ClipTextOutput:
    """All hidden states (``hidden_states[0]`` = embeddings, ``[-1]`` = last block, no final LN),
    the final-LN'd last layer, and the pooled EOS feature (final LN, then projection if present)."""

    hidden_states: tuple[torch.Tensor, ...]
    last_hidden_state: torch.Tensor
    pooled: torch.Tensor


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


class ClipEmbeddings(nn.Module):
    def __init__(self, cfg: ClipTextConfig) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.position_embedding = nn.Embedding(cfg.max_positions, cfg.width)

    def forward(self, input_ids: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """``extra`` [k, width]: rows appended to the token table for this call (ids ``vocab + i``
        select row i) -- how textual-inversion vectors enter the encoder."""
        n = input_ids.shape[1]
        # Positions are always 0..n-1; computed here rather than kept as a buffer, so
        # the model has no buffers to re-create after meta-device construction.
        if extra is None:
            tokens = self.token_embedding(input_ids)
        else:
            weight = self.token_embedding.weight
            tokens = F.embedding(input_ids, torch.cat([weight, extra.to(weight.device, weight.dtype)]))
        return tokens + self.position_embedding.weight[:n]


class ClipAttention(nn.Module):
    def __init__(self, cfg: ClipTextConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.q_proj = nn.Linear(cfg.width, cfg.width)
        self.k_proj = nn.Linear(cfg.width, cfg.width)
        self.v_proj = nn.Linear(cfg.width, cfg.width)
        self.out_proj = nn.Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, h, c // h).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)), is_causal=True
        )
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))


class ClipMLP(nn.Module):
    def __init__(self, cfg: ClipTextConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.width, cfg.intermediate)
        self.fc2 = nn.Linear(cfg.intermediate, cfg.width)
        self.act = _quick_gelu if cfg.activation == "quick_gelu" else F.gelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ClipEncoderLayer(nn.Module):
    def __init__(self, cfg: ClipTextConfig) -> None:
        super().__init__()
        self.self_attn = ClipAttention(cfg)
        self.layer_norm1 = nn.LayerNorm(cfg.width, eps=cfg.eps)
        self.mlp = ClipMLP(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.width, eps=cfg.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class ClipEncoder(nn.Module):
    def __init__(self, cfg: ClipTextConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(ClipEncoderLayer(cfg) for _ in range(cfg.layers))


class ClipTextTransformer(nn.Module):
    def __init__(self, cfg: ClipTextConfig) -> None:
        super().__init__()
        self.embeddings = ClipEmbeddings(cfg)
        self.encoder = ClipEncoder(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.width, eps=cfg.eps)


class ClipTextModel(nn.Module):
    """CLIP text encoder; parameter names equal the HF / SD1 checkpoint keys.

    (``text_model.*`` and, for towers with a projection, ``text_projection.weight``.)
    """

    def __init__(self, cfg: ClipTextConfig) -> None:
        super().__init__()
        self.config = cfg
        self.text_model = ClipTextTransformer(cfg)
        self.text_projection = (
            nn.Linear(cfg.width, cfg.projection_dim, bias=False) if cfg.projection_dim is not None else None
        )

    def forward(self, input_ids: torch.Tensor, eos_id: int | None = None,
                extra_embeddings: torch.Tensor | None = None) -> ClipTextOutput:
        """Encode ``input_ids`` [B, N] (N <= max_positions); ids from ``vocab_size`` on select rows of
        ``extra_embeddings`` (textual inversion, see ``ClipEmbeddings``).

        The pooled feature is taken at the first ``eos_id`` token of each row
        (defaults to the config's EOS); rows without one fall back to the last position.
        """
        tm = self.text_model
        x = tm.embeddings(input_ids, extra_embeddings)
        hidden = [x]
        for layer in tm.encoder.layers:
            x = layer(x)
            hidden.append(x)
        last = tm.final_layer_norm(x)
        eos = self.config.eos_id if eos_id is None else eos_id
        is_eos = input_ids == eos
        idx = torch.where(is_eos.any(-1), is_eos.int().argmax(-1), input_ids.shape[1] - 1)
        pooled = last[torch.arange(last.shape[0], device=last.device), idx]
        if self.text_projection is not None:
            pooled = self.text_projection(pooled)
        return ClipTextOutput(tuple(hidden), last, pooled)


def select_hidden(model: ClipTextModel, out: ClipTextOutput, layer: int, final_norm: bool) -> torch.Tensor:
    """Pick the hidden state of block ``layer`` (negative: -1 = last block, -2 = penultimate ...).

    ``final_norm`` applies the final LayerNorm, as the families require:

    - SD1 (CLIP-L): last layer + final LN by default; "clip skip 2" = penultimate + final LN.
    - SD2 (ViT-H): penultimate + final LN (SD2 was trained on that).
    - SDXL: CLIP-L penultimate and bigG penultimate, both *without* final LN; the pooled
      vector comes from bigG's last layer (final LN + projection, see ``ClipTextOutput.pooled``).
    """
    n = len(out.hidden_states) - 1
    if not -n <= layer <= -1:
        raise ValueError(f"layer must be in [-{n}, -1], got {layer}")
    h = out.hidden_states[layer]
    return model.text_model.final_layer_norm(h) if final_norm else h


# --------------------------------------------------------------------------------------------
# State-dict helpers
# --------------------------------------------------------------------------------------------

_OPENCLIP_BLOCK_RENAMES = {
    "ln_1.": "layer_norm1.",
    "ln_2.": "layer_norm2.",
    "attn.out_proj.": "self_attn.out_proj.",
    "mlp.c_fc.": "mlp.fc1.",
    "mlp.c_proj.": "mlp.fc2.",
}
# OpenCLIP tensors with no counterpart in the text encoder's forward pass.
_OPENCLIP_IGNORED = ("logit_scale", "attn_mask")
_BLOCK_RE = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)")


def openclip_to_hf(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an OpenCLIP text tower (prefix already stripped) to HF names.

    The fused attention ``in_proj_{weight,bias}`` [3C, ...] is split into q/k/v by
    slicing (views, no copy) and ``text_projection`` ([width, proj], applied as
    ``x @ P``) becomes ``text_projection.weight`` = ``P.T`` (a view), since a
    Linear computes ``x @ W.T``. Keys of the vision tower and bookkeeping buffers
    (``logit_scale``, ``attn_mask``) are dropped; any other unknown key raises.
    """
    out: dict[str, torch.Tensor] = {}
    for key, t in sd.items():
        if key in _OPENCLIP_IGNORED or key.startswith("visual."):
            continue
        if key == "token_embedding.weight":
            out["text_model.embeddings.token_embedding.weight"] = t
        elif key == "positional_embedding":
            out["text_model.embeddings.position_embedding.weight"] = t
        elif key.startswith("ln_final."):
            out["text_model.final_layer_norm." + key[len("ln_final.") :]] = t
        elif key == "text_projection":
            out["text_projection.weight"] = t.t()
        elif m := _BLOCK_RE.fullmatch(key):
            base = f"text_model.encoder.layers.{m.group(1)}."
            rest = m.group(2)
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = "weight" if rest.endswith("weight") else "bias"
                for name, part in zip(("q_proj", "k_proj", "v_proj"), t.chunk(3, dim=0), strict=True):
                    out[f"{base}self_attn.{name}.{kind}"] = part
                continue
            for old, new in _OPENCLIP_BLOCK_RENAMES.items():
                if rest.startswith(old):
                    out[base + new + rest[len(old) :]] = t
                    break
            else:
                raise KeyError(f"unexpected OpenCLIP block key: {key}")
        else:
            raise KeyError(f"unexpected OpenCLIP text key: {key}")
    return out


def clean_hf_clip_state_dict(sd: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """Drop the ``embeddings.position_ids`` buffer old SD1 files carry (positions are implicit here).

    A view, not a copy: reads nothing, and a memory-mapped file's pages can still be released per tensor."""
    return DropKeysView(sd, lambda k: k.endswith("embeddings.position_ids"))


def infer_clip_config(
    sd: Mapping[str, torch.Tensor], activation: Activation, heads: int | None = None
) -> ClipTextConfig:
    """Infer a :class:`ClipTextConfig` from an HF-named state dict (run :func:`openclip_to_hf` first).

    Head count is not recoverable from shapes; every SD text encoder uses a head
    width of 64 (CLIP-L 768/12, ViT-H 1024/16, bigG 1280/20), so ``heads`` defaults to
    ``width // 64`` by that family rule. ``activation`` must be given by the caller.
    """
    tok = sd["text_model.embeddings.token_embedding.weight"]
    pos = sd["text_model.embeddings.position_embedding.weight"]
    width = int(tok.shape[1])
    prefix = "text_model.encoder.layers."
    layer_ids = {int(k[len(prefix) :].split(".")[0]) for k in sd if k.startswith(prefix)}
    proj = sd.get("text_projection.weight")
    fc1 = sd["text_model.encoder.layers.0.mlp.fc1.weight"]
    return ClipTextConfig(
        width=width,
        layers=len(layer_ids),
        heads=heads if heads is not None else max(1, width // HEAD_DIM),
        intermediate=int(fc1.shape[0]),
        vocab_size=int(tok.shape[0]),
        max_positions=int(pos.shape[0]),
        activation=activation,
        projection_dim=int(proj.shape[0]) if proj is not None else None,
    )


def build_clip_from_state_dict(
    sd: Mapping[str, torch.Tensor], activation: Activation, heads: int | None = None
) -> ClipTextModel:
    """Infer the config, build on the meta device and assign ``sd`` (HF-named, prefix stripped) in place."""
    sd = clean_hf_clip_state_dict(sd)
    cfg = infer_clip_config(sd, activation, heads)
    model = build_on_meta(ClipTextModel, cfg)
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval()

