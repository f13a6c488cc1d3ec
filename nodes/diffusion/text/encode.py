"""Prompt -> conditioning tensors for SD1, SD2 and SDXL text encoders.

Pipeline: :func:`~nodes.diffusion.text.weighting.parse_prompt` splits the prompt
into weighted segments; each segment is tokenized word by word and every token
carries its segment's weight; the token stream is cut into chunks of
``window - 2`` (75) tokens, each wrapped in BOS/EOS and padded to ``window``
(77); all chunks are encoded in one batch and concatenated along the sequence
axis, giving ``[B, 77 * k, dim]``.

Chunking keeps short words (up to :data:`KEEP_WORD_TOKENS` tokens) whole by
moving them to the next chunk; longer words are split. ``BREAK`` closes the
current chunk.

Weighting follows ComfyUI (not A1111): every token's feature is interpolated
from the encoding of the empty prompt, ``z = z_empty + (z - z_empty) * w``,
with ``z_empty`` computed with the same layer choice. Unlike A1111's
"multiply, then restore the original mean", this leaves weight-1 tokens
untouched and a weight of 0 yields exactly the empty-prompt feature.

Layer choice per family (from the reference implementations):

===========  =========================================  ==================
family       hidden state                               pooled
===========  =========================================  ==================
SD1          last layer + final LN (clip skip 2:        unused
             penultimate + final LN)
SD2 (ViT-H)  penultimate + final LN                     unused
SDXL         CLIP-L penultimate (no final LN) ++        bigG last layer,
             bigG penultimate (no final LN) -> 2048      EOS token, final
                                                         LN, projection
===========  =========================================  ==================
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from nodes.diffusion.models.clip_text import ClipTextModel, select_hidden
from nodes.diffusion.text.embeddings import PLACEHOLDER_BASE, EmbeddingSlots, split_embeddings
from nodes.diffusion.text.tokenizer import ClipTokenizer
from nodes.diffusion.text.weighting import parse_prompt

__all__ = [
    "KEEP_WORD_TOKENS",
    "SD1",
    "SD2",
    "SDXL_G",
    "SDXL_L",
    "EncoderSettings",
    "chunk_prompt",
    "encode",
    "encode_sdxl",
    "sdxl_size_conditioning",
    "timestep_embedding",
]

#: Words of at most this many tokens are never split across two chunks.
KEEP_WORD_TOKENS = 8


@dataclass(frozen=True)
class EncoderSettings:
    """How one text encoder is used by a model family.

    ``clip_skip``: 1 = last layer, 2 = penultimate, ... (A1111 numbering; ComfyUI's
    "stop at layer" -n is ``clip_skip=n``). ``pad_id`` None pads with EOS.
    """

    clip_skip: int = 1
    final_norm: bool = True
    pad_id: int | None = None


SD1 = EncoderSettings(clip_skip=1, final_norm=True, pad_id=None)
SD2 = EncoderSettings(clip_skip=2, final_norm=True, pad_id=0)
SDXL_L = EncoderSettings(clip_skip=2, final_norm=False, pad_id=None)
SDXL_G = EncoderSettings(clip_skip=2, final_norm=False, pad_id=0)


def chunk_prompt(
    tokenizer: ClipTokenizer, text: str, *, window: int = 77, pad_id: int | None = None,
    embeddings: EmbeddingSlots | None = None,
) -> tuple[list[list[int]], list[list[float]]]:
    """Tokenize a weighted prompt into padded ``window``-sized chunks of ids and per-token weights.

    BOS, EOS and padding get weight 1. An empty prompt gives one chunk ``[BOS, EOS, pad...]``.
    With ``embeddings``, each ``embedding:name`` becomes that embedding's placeholder ids (one per
    vector, kept together like a word; see :mod:`nodes.diffusion.text.embeddings`).
    """
    body = window - 2
    pad = tokenizer.eos_id if pad_id is None else pad_id
    chunks: list[list[tuple[int, float]]] = [[]]

    def close() -> None:
        if chunks[-1]:
            chunks.append([])

    for seg in parse_prompt(text):
        if seg.is_break:
            close()
            continue
        words: list[list[int]] = []
        for piece in split_embeddings(seg.text) if embeddings is not None else [seg.text]:
            words += [embeddings.ids(piece[0])] if isinstance(piece, tuple) else tokenizer.encode_words(piece)
        for word in words:
            cur = chunks[-1]
            if len(cur) + len(word) > body and len(word) <= KEEP_WORD_TOKENS and cur:
                close()
            for tok in word:
                if len(chunks[-1]) == body:
                    close()
                chunks[-1].append((tok, seg.weight))
    if len(chunks) > 1 and not chunks[-1]:
        chunks.pop()

    ids_out: list[list[int]] = []
    weights_out: list[list[float]] = []
    for chunk in chunks:
        n_pad = window - 2 - len(chunk)
        ids_out.append([tokenizer.bos_id, *(t for t, _ in chunk), tokenizer.eos_id] + [pad] * n_pad)
        weights_out.append([1.0, *(w for _, w in chunk), 1.0] + [1.0] * n_pad)
    return ids_out, weights_out


def _run(model: ClipTextModel, ids: torch.Tensor, settings: EncoderSettings, eos_id: int,
         embeddings: EmbeddingSlots | None = None, embedding_key: str | None = None):
    extra = None
    if embeddings:
        vocab = model.text_model.embeddings.token_embedding.num_embeddings
        extra = embeddings.table(model.config.width, embedding_key)
        ids = torch.where(ids >= PLACEHOLDER_BASE, ids - PLACEHOLDER_BASE + vocab, ids)
    out = model(ids, eos_id=eos_id, extra_embeddings=extra)
    return select_hidden(model, out, -settings.clip_skip, settings.final_norm), out.pooled


def encode(
    model: ClipTextModel,
    tokenizer: ClipTokenizer,
    text: str | Sequence[str],
    *,
    settings: EncoderSettings = SD1,
    clip_skip: int | None = None,
    window: int = 77,
    embeddings: EmbeddingSlots | None = None,
    embedding_key: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode one prompt (or a batch) into ``(cond [B, window * k, dim], pooled [B, P])``.

    ``embeddings`` resolves ``embedding:name`` words (textual inversion); ``embedding_key`` picks
    this encoder's vectors in SDXL files (``clip_l`` / ``clip_g``).

    ``settings`` is the family preset (:data:`SD1`, :data:`SD2`, :data:`SDXL_L`,
    :data:`SDXL_G`); ``clip_skip`` overrides its layer choice (1 = last layer).

    ``k`` is the largest chunk count in the batch; shorter prompts are padded with
    empty-prompt chunks. ``pooled`` comes from each prompt's first chunk (last
    layer, EOS token, final LN, projection if the model has one).
    """
    if clip_skip is not None:
        settings = replace(settings, clip_skip=clip_skip)
    texts = [text] if isinstance(text, str) else list(text)
    per_prompt = [chunk_prompt(tokenizer, t, window=window, pad_id=settings.pad_id, embeddings=embeddings)
                  for t in texts]
    empty_ids, empty_w = chunk_prompt(tokenizer, "", window=window, pad_id=settings.pad_id)
    k = max(len(ids) for ids, _ in per_prompt)
    ids_rows: list[list[int]] = []
    w_rows: list[list[float]] = []
    for ids, ws in per_prompt:
        extra = k - len(ids)
        ids_rows += ids + empty_ids * extra
        w_rows += ws + empty_w * extra

    param = next(model.parameters())
    ids_t = torch.tensor(ids_rows + empty_ids, dtype=torch.long, device=param.device)
    with torch.no_grad():
        hidden, pooled = _run(model, ids_t, settings, tokenizer.eos_id, embeddings, embedding_key)
    z, z_empty = hidden[:-1], hidden[-1:]
    weights = torch.tensor(w_rows, dtype=z.dtype, device=z.device)
    if bool((weights != 1.0).any()):
        z = z_empty + (z - z_empty) * weights.unsqueeze(-1)
    b = len(texts)
    cond = z.reshape(b, k * window, z.shape[-1])
    pooled = pooled[:-1].reshape(b, k, -1)[:, 0]
    return cond, pooled


def encode_sdxl(
    clip_l: ClipTextModel,
    clip_g: ClipTextModel,
    tokenizer: ClipTokenizer,
    text: str | Sequence[str],
    *,
    clip_skip: int = 2,
    window: int = 77,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SDXL: CLIP-L and bigG hidden states concatenated on the feature axis; pooled from bigG.

    Both encoders share the CLIP tokenizer (so chunking agrees); only the padding id
    differs (EOS for CLIP-L, 0 for bigG). ``clip_skip`` defaults to SDXL's penultimate layer.
    """
    l_settings = EncoderSettings(clip_skip=clip_skip, final_norm=False, pad_id=SDXL_L.pad_id)
    g_settings = EncoderSettings(clip_skip=clip_skip, final_norm=False, pad_id=SDXL_G.pad_id)
    cond_l, _ = encode(clip_l, tokenizer, text, settings=l_settings, window=window)
    cond_g, pooled = encode(clip_g, tokenizer, text, settings=g_settings, window=window)
    return torch.cat([cond_l, cond_g], dim=-1), pooled


def timestep_embedding(values: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[cos(v * f_i), sin(v * f_i)]`` with ``f_i = max_period ** (-i / (dim / 2))``.

    This is the LDM/SDXL convention (cosine half first), used for the UNet's
    timestep and for SDXL's size conditioning.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = values.float()[..., None] * freqs.to(values.device)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[..., :1])], dim=-1)
    return emb


def sdxl_size_conditioning(
    pooled: torch.Tensor,
    width: int,
    height: int,
    crop_w: int = 0,
    crop_h: int = 0,
    target_width: int | None = None,
    target_height: int | None = None,
) -> torch.Tensor:
    """SDXL's ``y`` vector: ``pooled ++ emb(height, width, crop_h, crop_w, target_h, target_w)``.

    Order follows SDXL's micro-conditioning (original size as (h, w), crop top-left as
    (top, left), target size as (h, w)); each number gets a 256-d sinusoidal embedding,
    so with bigG's 1280-d pooled output ``y`` has 2816 features (the UNet's ``adm_in_channels``).
    ``crop_w``/``crop_h`` are the crop's left/top offsets in pixels.
    """
    tw = width if target_width is None else target_width
    th = height if target_height is None else target_height
    sizes = torch.tensor([height, width, crop_h, crop_w, th, tw], dtype=torch.float32, device=pooled.device)
    emb = timestep_embedding(sizes, 256).reshape(1, -1).to(pooled.dtype)
    return torch.cat([pooled, emb.expand(pooled.shape[0], -1)], dim=-1)
