"""T5 encoder (v1.1 / T5-XXL as used by FLUX and SD3) with Hugging Face key names, and its tokenizer.

Parameter names are those of ``transformers.T5EncoderModel`` and of the files users put in
``models/text_encoders/`` (``t5xxl_fp16.safetensors``: ``shared.weight``,
``encoder.block.N.layer.0.SelfAttention.q.weight`` ...), so loading is an assignment.
The architecture is read from shapes by :func:`t5_config_from_state_dict`; the head count,
which the fused ``q`` width (heads x d_kv) hides, comes from the relative attention bias
table ``(num_buckets, heads)`` of block 0.

T5 specifics kept exactly: RMS layer norms without bias, attention logits *not* scaled by
``1/sqrt(d_kv)``, one bucketed relative position bias computed in block 0 and reused by all
blocks, gated-GELU (tanh) feed-forward for v1.1 (``wi_0``/``wi_1``) or ReLU for the
original T5 (``wi``).  Computation runs in :attr:`T5Encoder.compute_dtype` (float32 by
default); weights stored in fp16/bf16/fp8 are upcast one layer at a time.

:class:`T5Tokenizer` reads a Hugging Face ``tokenizer.json`` (SentencePiece unigram) with
the ``tokenizers`` package and pads like FLUX (EOS appended, ``<pad>`` to 256/512).  A
``tokenizer.json`` beside the encoder file wins; without one, encoders whose embedding has
T5 v1.1's vocabulary (32,128 rows: FLUX's and SD3's T5-XXL) use the copy shipped in
``nodes/diffusion/text/vocab/t5_tokenizer.json.gz`` (:meth:`T5Tokenizer.shipped`).
"""

from __future__ import annotations

import functools
import gzip
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Embedding, Linear, RMSScale, init_weights

__all__ = [
    "T5Config",
    "T5Encoder",
    "T5Tokenizer",
    "T5TokenizerError",
    "build_t5_from_state_dict",
    "clean_t5_state_dict",
    "is_t5_state_dict",
    "relative_position_bucket",
    "shipped_t5_fits",
    "t5_config_from_state_dict",
]


@dataclass(frozen=True)
class T5Config:
    """Shape hyper-parameters of a T5 encoder (defaults: T5-XXL v1.1, FLUX's text encoder)."""

    vocab_size: int = 32128
    d_model: int = 4096
    d_kv: int = 64
    num_heads: int = 64
    d_ff: int = 10240
    num_layers: int = 24
    num_buckets: int = 32
    max_distance: int = 128
    gated: bool = True
    eps: float = 1e-6


def relative_position_bucket(relative: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """T5's bidirectional bucketing of ``key_pos - query_pos``: exact for small offsets, log-spaced up to
    ``max_distance``; half the buckets for each sign."""
    half = num_buckets // 2
    buckets = (relative > 0).long() * half
    distance = relative.abs()
    exact = half // 2
    log_part = exact + (
        torch.log(distance.float().clamp(min=1) / exact) / math.log(max_distance / exact) * (half - exact)
    ).long()
    log_part = log_part.clamp(max=half - 1)
    return buckets + torch.where(distance < exact, distance, log_part)


class T5Attention(nn.Module):
    def __init__(self, cfg: T5Config, has_bias: bool) -> None:
        super().__init__()
        inner = cfg.num_heads * cfg.d_kv
        self.cfg = cfg
        self.q = Linear(cfg.d_model, inner, bias=False)
        self.k = Linear(cfg.d_model, inner, bias=False)
        self.v = Linear(cfg.d_model, inner, bias=False)
        self.o = Linear(inner, cfg.d_model, bias=False)
        self.relative_attention_bias = Embedding(cfg.num_buckets, cfg.num_heads) if has_bias else None

    def position_bias(self, n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``(1, heads, n, n)`` additive bias from the bucketed relative positions."""
        assert self.relative_attention_bias is not None
        pos = torch.arange(n, device=device)
        buckets = relative_position_bucket(pos[None, :] - pos[:, None], self.cfg.num_buckets, self.cfg.max_distance)
        table = self.relative_attention_bias.weight.to(device=device, dtype=dtype)
        return F.embedding(buckets, table).permute(2, 0, 1).unsqueeze(0)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.cfg.num_heads, self.cfg.d_kv).transpose(1, 2)

        # T5 does not scale the logits: scale=1.0.
        out = F.scaled_dot_product_attention(heads(self.q(x)), heads(self.k(x)), heads(self.v(x)), bias, scale=1.0)
        return self.o(out.transpose(1, 2).reshape(b, n, -1))


class T5SelfAttentionLayer(nn.Module):
    def __init__(self, cfg: T5Config, has_bias: bool) -> None:
        super().__init__()
        self.SelfAttention = T5Attention(cfg, has_bias)
        self.layer_norm = RMSScale(cfg.d_model, cfg.eps, param="weight")

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return x + self.SelfAttention(self.layer_norm(x), bias)


class T5DenseReluDense(nn.Module):
    """Gated GELU (v1.1: ``gelu(wi_0 x) * wi_1 x``) or plain ReLU (original T5: ``relu(wi x)``), then ``wo``."""

    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.gated = cfg.gated
        if cfg.gated:
            self.wi_0 = Linear(cfg.d_model, cfg.d_ff, bias=False)
            self.wi_1 = Linear(cfg.d_model, cfg.d_ff, bias=False)
        else:
            self.wi = Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.wo = Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gated:
            h = F.gelu(self.wi_0(x), approximate="tanh") * self.wi_1(x)
        else:
            h = F.relu(self.wi(x))
        return self.wo(h)


class T5FFLayer(nn.Module):
    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.DenseReluDense = T5DenseReluDense(cfg)
        self.layer_norm = RMSScale(cfg.d_model, cfg.eps, param="weight")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.DenseReluDense(self.layer_norm(x))


class T5Block(nn.Module):
    def __init__(self, cfg: T5Config, has_bias: bool) -> None:
        super().__init__()
        self.layer = nn.ModuleList([T5SelfAttentionLayer(cfg, has_bias), T5FFLayer(cfg)])

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = _clamp_fp16(self.layer[0](x, bias))
        return _clamp_fp16(self.layer[1](x))


def _clamp_fp16(x: torch.Tensor) -> torch.Tensor:
    """T5-XXL activations exceed fp16's range; clamp as transformers does (no-op in other dtypes)."""
    if x.dtype != torch.float16:
        return x
    limit = torch.finfo(torch.float16).max - 1000
    return x.clamp(-limit, limit)


class T5Stack(nn.Module):
    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.block = nn.ModuleList(T5Block(cfg, has_bias=(i == 0)) for i in range(cfg.num_layers))
        self.final_layer_norm = RMSScale(cfg.d_model, cfg.eps, param="weight")


class T5Encoder(nn.Module):
    """T5 encoder stack; ``forward`` returns the last hidden state ``(B, L, d_model)`` after the final norm.

    Built uninitialised (load with :func:`build_t5_from_state_dict` or call :meth:`init_weights`).
    """

    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.config = cfg
        self.compute_dtype = torch.float32
        self.shared = Embedding(cfg.vocab_size, cfg.d_model)
        self.encoder = T5Stack(cfg)

    def init_weights(self, generator: torch.Generator | None = None) -> T5Encoder:
        return init_weights(self, generator)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``input_ids`` ``(B, L)``; ``attention_mask`` ``(B, L)`` with 1 = attend, 0 = padding to ignore.

        FLUX and SD3 run T5 *without* a mask (padding tokens are attended to): pass ``None`` for them.
        """
        dtype = self.compute_dtype
        # Look up in the stored dtype, then cast only the gathered rows (not the whole table).
        x = F.embedding(input_ids, self.shared.weight).to(dtype)
        n = input_ids.shape[1]
        first = self.encoder.block[0].layer[0].SelfAttention
        bias = first.position_bias(n, input_ids.device, dtype)
        if attention_mask is not None:
            blocked = (attention_mask[:, None, None, :] == 0).to(dtype) * torch.finfo(dtype).min
            bias = bias + blocked
        for block in self.encoder.block:
            x = block(x, bias)
        return self.encoder.final_layer_norm(x)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def clean_t5_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our key set from an HF T5 encoder state dict: the tied ``encoder.embed_tokens.weight`` becomes
    ``shared.weight`` when that is absent and is dropped otherwise; decoder/LM-head keys are dropped
    (a full ``T5ForConditionalGeneration`` file holds the encoder too)."""
    out = {k: v for k, v in sd.items() if k.startswith("encoder.") or k == "shared.weight"}
    tied = out.pop("encoder.embed_tokens.weight", None)
    if "shared.weight" not in out and tied is not None:
        out["shared.weight"] = tied
    return out


def is_t5_state_dict(keys: Iterable[str]) -> bool:
    """Whether ``keys`` (prefix stripped) are a T5 encoder's: its relative attention bias is unique to T5."""
    return "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight" in set(keys)


def t5_config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> T5Config:
    """Read a :class:`T5Config` from tensor shapes (keys as after :func:`clean_t5_state_dict`)."""
    try:
        return _config_from_shapes(sd)
    except KeyError as exc:
        raise ValueError(f"not a complete T5 encoder (Hugging Face layout): tensor {exc.args[0]!r} is missing") from exc


def _config_from_shapes(sd: Mapping[str, torch.Tensor]) -> T5Config:
    vocab, d_model = (int(s) for s in sd["shared.weight"].shape)
    bias_table = sd["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    num_buckets, heads = (int(s) for s in bias_table.shape)
    inner = int(sd["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0])
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in sd
    wi = "wi_0" if gated else "wi"
    layers = {int(k.split(".")[2]) for k in sd if k.startswith("encoder.block.")}
    return T5Config(
        vocab_size=vocab,
        d_model=d_model,
        d_kv=inner // heads,
        num_heads=heads,
        d_ff=int(sd[f"encoder.block.0.layer.1.DenseReluDense.{wi}.weight"].shape[0]),
        num_layers=max(layers) + 1,
        num_buckets=num_buckets,
        gated=gated,
    )


def build_t5_from_state_dict(sd: Mapping[str, torch.Tensor], config: T5Config | None = None) -> T5Encoder:
    """Build on the meta device and adopt the (prefix-stripped) HF-named tensors strictly, as stored."""
    sd = clean_t5_state_dict(sd)
    cfg = config or t5_config_from_state_dict(sd)
    from ..quant.layers import load_quantized, needs_quantized_load
    from .loading import adopt_on_meta, build_on_meta

    if needs_quantized_load(sd):  # GGUF / fp8 files: weights stay in storage dtype, expanded per layer
        return load_quantized(build_on_meta(T5Encoder, cfg), sd, name="T5 text encoder")
    return adopt_on_meta(T5Encoder, cfg, sd)


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


class T5TokenizerError(ValueError):
    """No usable T5 tokenizer file."""


#: File names looked for beside a T5 encoder file, in order (``{stem}`` = encoder file name without suffix).
TOKENIZER_CANDIDATES = ("{stem}.tokenizer.json", "tokenizer.json", "t5_tokenizer/tokenizer.json")

#: The T5 tokenizer shipped with nodegraph: Google's T5 SentencePiece vocabulary (32,000 pieces and
#: 100 ``<extra_id_N>`` sentinels) as a Hugging Face ``tokenizer.json``; see ``text/vocab/README.md``.
SHIPPED_TOKENIZER = Path(__file__).resolve().parent.parent / "text" / "vocab" / "t5_tokenizer.json.gz"
#: Token ids of the shipped vocabulary, and the embedding rows of the encoders it belongs to (T5 v1.1 /
#: T5-XXL pad 32,100 to 32,128).  umT5 / mT5 (~250k rows) and tiny test vocabularies do not fit.
SHIPPED_PIECES = 32100
T5_VOCAB_ROWS = 32128


def shipped_t5_fits(vocab_rows: int | None) -> bool:
    """Whether an encoder whose embedding has ``vocab_rows`` rows (None: unknown) uses T5 v1.1's vocabulary,
    so the shipped tokenizer may stand in for a missing ``tokenizer.json``."""
    return vocab_rows is not None and SHIPPED_PIECES <= int(vocab_rows) <= T5_VOCAB_ROWS


@functools.lru_cache(maxsize=1)
def _shipped_tokenizer() -> Any:
    """The shipped ``tokenizer.json``, parsed once per process (read-only afterwards: encoding only)."""
    from tokenizers import Tokenizer

    with gzip.open(SHIPPED_TOKENIZER, "rt", encoding="utf-8") as fh:
        return Tokenizer.from_str(fh.read())


class T5Tokenizer:
    """SentencePiece-unigram T5 tokenizer read from a Hugging Face ``tokenizer.json``.

    The vocabulary is not in the encoder's weights: it is read from a file placed next to the
    encoder (see :meth:`beside`) -- the file ComfyUI and diffusers ship as
    ``t5_tokenizer/tokenizer.json`` -- or, for T5 v1.1 / T5-XXL encoders without one, from the
    copy shipped with nodegraph (:meth:`shipped`).  ``path`` may also be a prepared
    ``tokenizers.Tokenizer``.
    """

    def __init__(self, path: str | os.PathLike[str] | Any) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - tokenizers ships with transformers
            raise T5TokenizerError("the 'tokenizers' package is needed to read T5 tokenizer files") from exc
        if isinstance(path, Tokenizer):
            self.path: Path | None = None
            self._tok = path
        else:
            self.path = Path(path)
            try:
                self._tok = Tokenizer.from_file(str(self.path))
            except Exception as exc:  # the Rust side raises plain Exception subclasses
                raise T5TokenizerError(f"{self.path}: not a readable tokenizer.json ({exc})") from exc
        self.pad_id = self._special("<pad>", 0)
        self.eos_id = self._special("</s>", 1)

    def _special(self, token: str, default: int) -> int:
        found = self._tok.token_to_id(token)
        return default if found is None else int(found)

    @classmethod
    def shipped(cls) -> T5Tokenizer:
        """The T5 v1.1 / T5-XXL tokenizer shipped with nodegraph (parsed once per process)."""
        return cls(_shipped_tokenizer())

    @classmethod
    def beside(cls, encoder_path: str | os.PathLike[str], vocab_rows: int | None = None) -> T5Tokenizer:
        """The tokenizer stored next to an encoder file (names in :data:`TOKENIZER_CANDIDATES`); without one,
        the shipped tokenizer when the encoder's embedding has ``vocab_rows`` rows that fit it
        (:func:`shipped_t5_fits`), else :class:`T5TokenizerError` saying where to put the file."""
        encoder = Path(encoder_path)
        tried = [encoder.parent / c.format(stem=encoder.stem) for c in TOKENIZER_CANDIDATES]
        for candidate in tried:
            if candidate.is_file():
                return cls(candidate)
        if shipped_t5_fits(vocab_rows):
            return cls.shipped()
        names = ", ".join(str(p) for p in tried)
        why = "" if vocab_rows is None else (
            f" (its {vocab_rows}-token vocabulary is not T5 v1.1's {T5_VOCAB_ROWS}, the one built into nodegraph)")
        raise T5TokenizerError(f"no T5 tokenizer found for {encoder}{why}: put the T5 tokenizer.json at one of "
                               f"{names}")

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def __call__(self, texts: str | Sequence[str], max_length: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)`` ``(B, max_length)``: truncated to ``max_length - 1`` tokens,
        ``</s>`` appended, ``<pad>`` after (FLUX: 256 for schnell, 512 for dev)."""
        if isinstance(texts, str):
            texts = [texts]
        ids = torch.full((len(texts), max_length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(texts), max_length), dtype=torch.long)
        for row, text in enumerate(texts):
            tokens = [*self.encode(text)[: max_length - 1], self.eos_id]
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        return ids, mask
