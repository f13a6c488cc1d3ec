"""A Qwen3 decoder used as a text encoder (Z-Image's Qwen3-4B), reading Hugging Face key names.

Parameter names are those of the HF ``Qwen3ForCausalLM`` / ``Qwen3Model`` files
(``model.embed_tokens``, ``model.layers.N.self_attn.{q,k,v,o}_proj``, ``q_norm`` /
``k_norm``, ``mlp.{gate,up,down}_proj``, ``input_layernorm``,
``post_attention_layernorm``, ``model.norm``), which is also what ComfyUI's
``text_encoders/qwen_3_4b.safetensors`` holds; an ``lm_head`` is ignored (an encoder
never produces logits).  The architecture comes from shapes
(:func:`qwen3_config_from_state_dict`); the RoPE base and the norm epsilon are not
stored in weights and default to Qwen3's (1,000,000 and 1e-6) unless a ``config.json``
says otherwise (:func:`qwen3_config_from_json`).

Diffusion models do not use the last layer's output: Z-Image conditions on the hidden
states *before* the last decoder layer (``hidden_states[-2]`` in transformers' indexing),
so :meth:`Qwen3Encoder.forward` takes that index and stops early, skipping every layer
after it.  Attention is causal with grouped-query heads; padding (``attention_mask``)
hides keys as transformers does, so right-padded prompts give the same states for
their real tokens as unpadded ones.

:class:`Qwen3Tokenizer` reads the tokenizer from the encoder's own ``tokenizer.json``
with the ``tokenizers`` package and wraps prompts in the chat template Z-Image was
trained with (:data:`ZIMAGE_TEMPLATE`).  Without that file, :func:`shipped_qwen_tokenizer`
builds the Qwen2/Qwen3 byte-level BPE in memory from the merge list shipped in
``nodes/diffusion/text/vocab/qwen2_merges.txt.gz`` (the vocabulary is implied by the merges).
"""

from __future__ import annotations

import functools
import gzip
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Embedding, Linear, RMSScale, init_weights

__all__ = [
    "ZIMAGE_TEMPLATE",
    "Qwen3Config",
    "Qwen3Encoder",
    "Qwen3Tokenizer",
    "build_qwen3_from_state_dict",
    "is_qwen3_state_dict",
    "qwen3_config_from_json",
    "qwen3_config_from_state_dict",
    "shipped_qwen_fits",
    "shipped_qwen_tokenizer",
]

#: The prompt wrapper of Z-Image: Qwen3's chat template for one user turn with the generation
#: prompt and thinking left enabled (which adds no ``<think>`` block), as diffusers' ZImagePipeline
#: and ComfyUI's Z-Image tokenizer both produce.
ZIMAGE_TEMPLATE = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


@dataclass(frozen=True)
class Qwen3Config:
    """Shape hyper-parameters (defaults: Qwen3-4B)."""

    vocab_size: int = 151936
    hidden_size: int = 2560
    intermediate_size: int = 9728
    num_layers: int = 36
    num_heads: int = 32
    num_kv_heads: int = 8
    head_dim: int = 128
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    attention_bias: bool = False

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")


class Attention(nn.Module):
    def __init__(self, cfg: Qwen3Config) -> None:
        super().__init__()
        d, hd = cfg.hidden_size, cfg.head_dim
        self.heads, self.kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, hd
        self.q_proj = Linear(d, cfg.num_heads * hd, bias=cfg.attention_bias)
        self.k_proj = Linear(d, cfg.num_kv_heads * hd, bias=cfg.attention_bias)
        self.v_proj = Linear(d, cfg.num_kv_heads * hd, bias=cfg.attention_bias)
        self.o_proj = Linear(cfg.num_heads * hd, d, bias=cfg.attention_bias)
        self.q_norm = RMSScale(hd, eps=cfg.rms_norm_eps, param="weight")
        self.k_norm = RMSScale(hd, eps=cfg.rms_norm_eps, param="weight")

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None
    ) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(b, n, self.heads, self.head_dim)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(b, n, self.kv_heads, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = rope
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None, enable_gqa=self.kv_heads != self.heads
        )
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1))


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE in the "rotate half" layout (channel i pairs with i + D/2), as HF Qwen/Llama."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Mlp(nn.Module):
    def __init__(self, cfg: Qwen3Config) -> None:
        super().__init__()
        self.gate_proj = Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: Qwen3Config) -> None:
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = Mlp(cfg)
        self.input_layernorm = RMSScale(cfg.hidden_size, eps=cfg.rms_norm_eps, param="weight")
        self.post_attention_layernorm = RMSScale(cfg.hidden_size, eps=cfg.rms_norm_eps, param="weight")

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None):
        x = x + self.self_attn(self.input_layernorm(x), rope, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class _Body(nn.Module):
    """The ``model.`` part of the HF files."""

    def __init__(self, cfg: Qwen3Config) -> None:
        super().__init__()
        self.embed_tokens = Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSScale(cfg.hidden_size, eps=cfg.rms_norm_eps, param="weight")


class Qwen3Encoder(nn.Module):
    """Qwen3 decoder returning the hidden states of one layer (built uninitialised, see :mod:`.layers`)."""

    def __init__(self, cfg: Qwen3Config) -> None:
        super().__init__()
        self.config = cfg
        self.model = _Body(cfg)

    def init_weights(self, generator: torch.Generator | None = None) -> Qwen3Encoder:
        return init_weights(self, generator)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        hidden_layer: int = -2,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Hidden states ``(B, L, hidden)`` at transformers' ``hidden_states[hidden_layer]``.

        Index 0 is the token embeddings, ``k`` the output of decoder layer ``k - 1``, and the
        last index (``num_layers``, or -1) the final-normed output; negative indices count from
        that end (Z-Image: -2).  Layers after the requested one are not run.  ``attention_mask``
        ``(B, L)``, 1 for real tokens: padded keys are hidden (positions stay ``0..L-1``, as
        transformers numbers them).  ``dtype``: compute dtype (weights are cast per layer).
        """
        n = self.config.num_layers
        index = hidden_layer + n + 1 if hidden_layer < 0 else hidden_layer
        if not 0 <= index <= n:
            raise ValueError(f"hidden_layer {hidden_layer} out of range for a {n}-layer Qwen3 (valid: {-n - 1}..{n})")
        x = self.model.embed_tokens(input_ids).to(dtype)
        rope = self._rope(input_ids.shape[1], x)
        mask = _attention_mask(attention_mask, input_ids.shape[1], x.device)
        for layer in self.model.layers[: min(index, n)]:
            x = layer(x, rope, mask)
        return self.model.norm(x) if index == n else x

    def _rope(self, length: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin ``(L, D)``, computed in float32 as transformers does, then cast to the compute dtype."""
        d = self.config.head_dim
        exponents = torch.arange(0, d, 2, dtype=torch.float32, device=like.device) / d
        inv_freq = 1.0 / (self.config.rope_theta**exponents)
        freqs = torch.arange(length, dtype=torch.float32, device=like.device)[:, None] * inv_freq
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos().to(like.dtype), emb.sin().to(like.dtype)


def _attention_mask(mask: torch.Tensor | None, length: int, device: torch.device) -> torch.Tensor | None:
    """None (plain causal) without padding; else a boolean ``(B, 1, L, L)`` causal-and-not-padding mask.

    A query row that would see no key at all (a left-padding position) is allowed its own
    position so the softmax stays finite; its output is padding and meaningless anyway.
    """
    if mask is None or bool(mask.all()):
        return None
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    allowed = causal[None, None] & mask.to(device=device, dtype=torch.bool)[:, None, None, :]
    empty = ~allowed.any(dim=-1, keepdim=True)
    return allowed | (empty & torch.eye(length, dtype=torch.bool, device=device)[None, None])


# --------------------------------------------------------------------------------------------
# Config, identification, building
# --------------------------------------------------------------------------------------------


def is_qwen3_state_dict(keys: Sequence[str] | Mapping[str, object]) -> bool:
    """Whether the keys are an HF Qwen3 decoder (per-head q/k norms tell it from Llama/Qwen2)."""
    keyset = set(keys)
    return {"model.embed_tokens.weight", "model.layers.0.self_attn.q_norm.weight"} <= keyset


def qwen3_config_from_state_dict(sd: Mapping[str, torch.Tensor], base: Qwen3Config | None = None) -> Qwen3Config:
    """Shapes -> config; ``base`` supplies what weights do not store (RoPE base, epsilon)."""
    try:
        vocab, hidden = (int(s) for s in sd["model.embed_tokens.weight"].shape)
        head_dim = int(sd["model.layers.0.self_attn.q_norm.weight"].shape[0])
        layers = {int(k.split(".")[2]) for k in sd if k.startswith("model.layers.")}
        return replace(
            base or Qwen3Config(),
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=int(sd["model.layers.0.mlp.gate_proj.weight"].shape[0]),
            num_layers=max(layers) + 1,
            num_heads=int(sd["model.layers.0.self_attn.q_proj.weight"].shape[0]) // head_dim,
            num_kv_heads=int(sd["model.layers.0.self_attn.k_proj.weight"].shape[0]) // head_dim,
            head_dim=head_dim,
            attention_bias="model.layers.0.self_attn.q_proj.bias" in sd,
        )
    except KeyError as exc:
        raise ValueError(f"not a complete Qwen3 text encoder (HF layout): tensor {exc.args[0]!r} is missing") from exc


def qwen3_config_from_json(path: str | Path) -> Qwen3Config:
    """The non-shape settings of an HF ``config.json`` (``rope_theta`` — top level or in
    ``rope_parameters`` — and ``rms_norm_eps``) over Qwen3's defaults; shapes come from the weights."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    rope = data.get("rope_parameters") or {}
    theta = rope.get("rope_theta", data.get("rope_theta", Qwen3Config.rope_theta))
    return Qwen3Config(rope_theta=float(theta), rms_norm_eps=float(data.get("rms_norm_eps", Qwen3Config.rms_norm_eps)))


def build_qwen3_from_state_dict(sd: Mapping[str, torch.Tensor], base: Qwen3Config | None = None) -> Qwen3Encoder:
    """Build on the meta device and adopt the HF-named tensors strictly (``lm_head.*`` ignored).

    Also accepts a bare ``Qwen3Model`` dict without the ``model.`` prefix.
    """
    if "embed_tokens.weight" in sd and "model.embed_tokens.weight" not in sd:
        sd = {f"model.{k}": v for k, v in sd.items()}
    if not is_qwen3_state_dict(sd):
        raise ValueError("not a Qwen3 text encoder state dict (no model.embed_tokens / per-head q_norm weights)")
    cfg = qwen3_config_from_state_dict(sd, base)
    weights = {k: v for k, v in sd.items() if not k.startswith("lm_head.")}
    from .loading import adopt_on_meta

    return adopt_on_meta(Qwen3Encoder, cfg, weights)


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


#: The Qwen2/Qwen2.5/Qwen3 BPE merge list shipped with nodegraph (151,387 lines ``left right``, no
#: header; see ``text/vocab/README.md``).
SHIPPED_MERGES = Path(__file__).resolve().parent.parent / "text" / "vocab" / "qwen2_merges.txt.gz"
#: Qwen's added tokens, ids 151643 onwards (after the 256 byte symbols and the 151,387 merges).
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>",
    "<think>", "</think>",
)
#: Qwen2's pre-tokenization pattern (contractions, letter runs with one leading non-letter, single digits,
#: punctuation runs, newlines, whitespace), as in its tokenizer.json.
QWEN_PRETOKENIZE_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                          r"|\s*[\r\n]+|\s+(?!\S)|\s+")
#: Token ids of the built-in vocabulary (151,643 BPE tokens + 26 added) and the embedding rows of the
#: encoders that use it (Qwen2/Qwen2.5/Qwen3 pad to 151,936: Qwen3-4B, Z-Image's encoder).
QWEN_TOKENS = 256 + 151387 + len(QWEN_SPECIAL_TOKENS)
QWEN_VOCAB_ROWS = 151936


def shipped_qwen_fits(vocab_rows: int | None) -> bool:
    """Whether an encoder whose embedding has ``vocab_rows`` rows (None: unknown) uses Qwen's vocabulary, so
    the built-in tokenizer may stand in for a missing ``tokenizer.json``."""
    return vocab_rows is not None and QWEN_TOKENS <= int(vocab_rows) <= QWEN_VOCAB_ROWS


@functools.lru_cache(maxsize=1)
def shipped_qwen_tokenizer() -> Any:
    """Qwen2/Qwen3's tokenizer as a ``tokenizers.Tokenizer``, built once per process from the shipped merges.

    Vocabulary: the 256 byte symbols in GPT-2's ``bytes_to_unicode`` order (ids 0..255), then each
    merge's concatenation in file order (256..151642), then :data:`QWEN_SPECIAL_TOKENS` (151643..).
    Pipeline as in Qwen's tokenizer.json: NFC, the :data:`QWEN_PRETOKENIZE_REGEX` split (isolated),
    byte-level mapping without prefix space, BPE without unknown token, byte-level decoder."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    from ..text.tokenizer import bytes_to_unicode

    with gzip.open(SHIPPED_MERGES, "rt", encoding="utf-8") as fh:
        merges = [tuple(line.split(" ", 1)) for line in fh.read().splitlines() if line]
    vocab = {symbol: i for i, symbol in enumerate(bytes_to_unicode().values())}
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    if len(vocab) + len(QWEN_SPECIAL_TOKENS) != QWEN_TOKENS:  # a damaged file would shift every id
        expected = QWEN_TOKENS - len(QWEN_SPECIAL_TOKENS)
        raise ValueError(f"{SHIPPED_MERGES}: {len(vocab)} distinct BPE tokens, expected {expected}")
    tok = Tokenizer(BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None, continuing_subword_prefix="",
                        end_of_word_suffix="", fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS])
    return tok


class Qwen3Tokenizer:
    """The encoder's own ``tokenizer.json`` (byte-level BPE) plus Z-Image's chat template.

    ``path``: a ``tokenizer.json`` or a prepared ``tokenizers.Tokenizer`` (such as
    :func:`shipped_qwen_tokenizer`).  Prompts are wrapped in ``template``, tokenised without
    extra special tokens (Qwen adds none) and cut at ``max_length`` tokens (diffusers'
    ZImagePipeline uses 512).
    """

    def __init__(self, path: str | Path | Any, template: str = ZIMAGE_TEMPLATE, max_length: int = 512) -> None:
        from tokenizers import Tokenizer

        if isinstance(path, Tokenizer):
            self._tok = path
        else:
            path = Path(path)
            if not path.is_file():
                raise FileNotFoundError(f"Qwen3 tokenizer file {path} not found: put the model's tokenizer.json "
                                        "there")
            self._tok = Tokenizer.from_file(str(path))
        self.template = template
        self.max_length = max_length
        pad = self._tok.token_to_id("<|endoftext|>")
        self.pad_id = 0 if pad is None else pad

    def token_ids(self, prompt: str) -> list[int]:
        ids = self._tok.encode(self.template.format(prompt), add_special_tokens=False).ids
        return ids[: self.max_length]

    def __call__(self, prompts: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)``, both ``(B, L)`` int64, right-padded to the longest prompt."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        seqs = [self.token_ids(p) for p in prompts]
        length = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), length), self.pad_id, dtype=torch.int64)
        mask = torch.zeros((len(seqs), length), dtype=torch.int64)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.int64)
            mask[i, : len(s)] = 1
        return ids, mask

