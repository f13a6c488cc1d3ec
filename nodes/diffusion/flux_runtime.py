"""MODEL and CLIP objects for FLUX.1: the transformer with its flow sampling, and the CLIP-L + T5 pair.

They travel on the same wires as the UNet objects in :mod:`.runtime` and offer
the same surface to the sampler nodes (``latent_channels``, ``schedule``,
``denoiser()``, ``condition_kwargs()``; ``encode()`` for prompts), so KSampler,
the custom-sampling nodes and Text Encode work on them unchanged.  Like the
UNet objects they are immutable: ModelSamplingFlux and LoRA make new ones.

Conditioning for FLUX (as in ComfyUI and diffusers' FluxPipeline): the T5
hidden states of the prompt (padded to at least 256 tokens, no attention
mask) are the sequence, CLIP-L's pooled (not projected) EOS feature is the
vector, and dev models also take a distilled ``guidance`` strength
(FluxGuidance; 3.5 when no node sets it, ComfyUI's default).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from .families import FamilyRules
from .models.clip_text import ClipTextModel
from .models.flux import FluxTransformer
from .models.t5 import T5Encoder, T5Tokenizer
from .runtime import Conditioning
from .sampling.model_sampling import FlowSchedule, make_denoiser
from .text.encode import SD1, chunk_prompt
from .text.tokenizer import ClipTokenizer
from .text.weighting import parse_prompt

#: Guidance a dev model gets when no FluxGuidance node set one (ComfyUI's default).
DEFAULT_GUIDANCE = 3.5
_FLUX_FIX = "encode the prompt with FLUX's text encoders: DualCLIPLoader (type flux) with CLIP-L and T5-XXL"
#: T5 prompts are padded to at least this many tokens (ComfyUI's FLUX tokenizer; diffusers' schnell default).
T5_MIN_TOKENS = 256


class ConditioningMismatch(ValueError):
    """A conditioning that does not fit the model it is given to (wrong text encoder or family);
    ``fix`` (optional) names the loader that makes the right conditioning."""

    blame = "conditioning"

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.fix = fix


class UnsupportedModel(ConditioningMismatch):
    """A model nodegraph can load but not sample (its extra input channels are of an unknown kind)."""

    blame = "model"


def _param_bytes(module: torch.nn.Module) -> int:
    """Resident weight bytes: parameters and buffers (GGUF/fp8 layers keep their weight as a buffer)."""
    return sum(t.element_size() * t.nelement() for t in (*module.parameters(), *module.buffers()))


@dataclass(frozen=True)
class FlowTransformerModel:
    """MODEL: a flow-matching transformer (FLUX, SD3 ...), its model sampling, and where/how it computes.

    The family-independent part: LoRA (``unet``/``with_unet``), model-sampling nodes
    (``with_schedule``) and the cache's size accounting work the same for every family;
    subclasses say what the network takes (``denoiser``, ``condition_kwargs``).
    ``dtype`` is the compute dtype; the weights keep the dtype they were loaded in
    (fp8, bf16 ...) and are cast one layer at a time (see ``models/layers.py``).
    """

    transformer: Any
    schedule: FlowSchedule
    rules: FamilyRules
    device: torch.device
    dtype: torch.dtype
    patches: tuple[str, ...] = ()

    @property
    def unet(self) -> Any:
        """The denoising network, under the name the generic model code (LoRA merge) uses."""
        return self.transformer

    def __nodegraph_nbytes__(self) -> int:
        return _param_bytes(self.transformer)

    def with_unet(self, transformer: Any, patch: str) -> Any:
        return replace(self, transformer=transformer, patches=self.patches + (patch,))

    def with_schedule(self, schedule: FlowSchedule) -> Any:
        return replace(self, schedule=schedule)


@dataclass(frozen=True)
class FluxModel(FlowTransformerModel):
    """MODEL: a FLUX.1 transformer (see :class:`FlowTransformerModel`)."""

    transformer: FluxTransformer

    @property
    def latent_channels(self) -> int:
        return self.transformer.config.out_channels // 4

    @property
    def has_guidance(self) -> bool:
        return self.transformer.config.guidance_embed

    def denoiser(self) -> Callable[..., torch.Tensor]:
        """``(x, sigma, context=, pooled=, guidance=) -> x0`` (x0 = x - sigma * velocity)."""
        transformer, dtype = self.transformer, self.dtype

        def model_fn(x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, pooled: torch.Tensor,
                     guidance: torch.Tensor | None = None, controls: Sequence[Any] = (),
                     concat: torch.Tensor | None = None) -> torch.Tensor:
            g = guidance.to(dtype) if guidance is not None else None
            xin = x.to(dtype)
            if concat is not None:  # Fill / Canny / Depth: [latent, image latent (, folded mask)] before patchify
                xin = torch.cat([xin, concat.to(x.device, dtype)], dim=1)
            out = transformer(xin, t.to(dtype), context.to(dtype), pooled.to(dtype), g)
            return out.to(x.dtype)

        return make_denoiser(model_fn, self.schedule, "flow")

    @property
    def concat_channels(self) -> int:
        """Latent channels beyond the noisy latent: 16 for Canny/Depth (control image), 80 for Fill
        (masked image + 8x8-folded mask), 0 for dev/schnell."""
        cfg = self.transformer.config
        return max(0, cfg.latent_in_channels - self.latent_channels)

    def concat_input(self, cond: Conditioning, batch: int, h: int, w: int, *, latent_image: torch.Tensor | None = None,
                     denoise_mask: torch.Tensor | None = None) -> torch.Tensor | None:
        """The extra input of Fill/Canny/Depth models for an ``h`` x ``w`` latent (see :mod:`.inpaint`)."""
        if not self.concat_channels:
            return None
        from .inpaint import InpaintInputError, flux_concat

        try:
            return flux_concat(cond, concat_channels=self.concat_channels, latent_channels=self.latent_channels,
                               batch=batch, h=h, w=w, scaling=(self.rules.vae_scaling_factor,
                                                               self.rules.vae_shift_factor),
                               denoise_mask=denoise_mask)
        except InpaintInputError as exc:
            raise UnsupportedModel(str(exc)) from None

    def condition_kwargs(self, cond: Conditioning, batch: int, height: int, width: int) -> dict[str, Any]:
        """T5 sequence, CLIP pooled vector and (dev) guidance, broadcast to the batch."""
        cfg = self.transformer.config
        if cond.pooled is None or cond.context.shape[-1] != cfg.context_in_dim:
            raise ConditioningMismatch(
                f"the prompt was encoded with a text encoder that gives {cond.context.shape[-1]}-wide features "
                f"and {'no' if cond.pooled is None else cond.pooled.shape[-1]} pooled features, but this FLUX "
                f"model takes T5 features of {cfg.context_in_dim} and a CLIP-L vector of {cfg.vec_in_dim}",
                _FLUX_FIX)
        if cond.pooled.shape[-1] != cfg.vec_in_dim:
            raise ConditioningMismatch(
                f"the CLIP text encoder gives a {cond.pooled.shape[-1]}-wide pooled vector but this FLUX model "
                f"takes {cfg.vec_in_dim}", _FLUX_FIX)
        if cond.controls:
            raise ConditioningMismatch("ControlNets for FLUX are not supported yet")
        kw: dict[str, Any] = {"context": cond.context.expand(batch, -1, -1),
                              "pooled": cond.pooled.expand(batch, -1)}
        if self.has_guidance:
            g = DEFAULT_GUIDANCE if cond.guidance is None else cond.guidance
            kw["guidance"] = torch.full((batch,), float(g), dtype=torch.float32)
        return kw


@dataclass(frozen=True)
class FluxTextEncoder:
    """CLIP: FLUX's two text encoders (either may be missing when loaded from one file).

    ``encode(text)`` sends the same prompt to both; ``encode_pair`` (CLIPTextEncodeFlux)
    sends one text to CLIP-L and another to T5.
    """

    clip_l: ClipTextModel | None
    t5: T5Encoder | None
    tokenizer: ClipTokenizer | None
    t5_tokenizer: T5Tokenizer | None
    rules: FamilyRules
    device: torch.device
    clip_skip: int | None = None  # accepted from CLIP Set Last Layer; FLUX uses only CLIP's pooled output
    patches: tuple[str, ...] = ()
    t5_min_tokens: int = T5_MIN_TOKENS

    @property
    def encoders(self) -> tuple[torch.nn.Module, ...]:
        return tuple(e for e in (self.clip_l, self.t5) if e is not None)

    def __nodegraph_nbytes__(self) -> int:
        return sum(_param_bytes(e) for e in self.encoders)

    def with_encoders(self, encoders: Sequence[torch.nn.Module], patch: str) -> FluxTextEncoder:
        """A copy with patched encoders (LoRA), given in :attr:`encoders` order (CLIP-L, then T5)."""
        it = iter(encoders)
        clip_l = next(it) if self.clip_l is not None else None
        t5 = next(it) if self.t5 is not None else None
        return replace(self, clip_l=clip_l, t5=t5, patches=self.patches + (patch,))

    def encode(self, text: str) -> Conditioning:
        return self.encode_pair(text, text)

    def encode_pair(self, clip_text: str, t5_text: str, guidance: float | None = None) -> Conditioning:
        """Conditioning from CLIP-L (pooled vector) and T5 (sequence); prompt weights act on T5 tokens."""
        if self.clip_l is None or self.tokenizer is None:
            raise ConditioningMismatch("this FLUX text encoder has no CLIP-L part; load both files with "
                                       "DualCLIPLoader (type flux)")
        if self.t5 is None or self.t5_tokenizer is None:
            raise ConditioningMismatch("this FLUX text encoder has no T5-XXL part; load both files with "
                                       "DualCLIPLoader (type flux)")
        with torch.no_grad():
            pooled = clip_pooled(self.clip_l, self.tokenizer, clip_text)
            context = t5_encode(self.t5, self.t5_tokenizer, t5_text, self.t5_min_tokens)
        return Conditioning(context.float().cpu(), pooled.float().cpu(), guidance=guidance)


def clip_pooled(model: ClipTextModel, tokenizer: ClipTokenizer, text: str) -> torch.Tensor:
    """CLIP-L's final-norm EOS feature of the prompt's first 77-token chunk, *without* the text
    projection (FLUX was trained on the un-projected vector; CLIP-L files often carry a projection)."""
    ids, _ = chunk_prompt(tokenizer, text, window=model.config.max_positions, pad_id=SD1.pad_id)
    param = next(model.parameters())
    ids_t = torch.tensor(ids[:1], dtype=torch.long, device=param.device)
    out = model(ids_t, eos_id=tokenizer.eos_id)
    is_eos = ids_t == tokenizer.eos_id
    idx = torch.where(is_eos.any(-1), is_eos.int().argmax(-1), ids_t.shape[1] - 1)
    return out.last_hidden_state[torch.arange(ids_t.shape[0], device=ids_t.device), idx]


def _t5_tokens(tokenizer: T5Tokenizer, text: str, min_tokens: int) -> tuple[list[int], list[float]]:
    """T5 ids of a weighted prompt (each weighted segment tokenized on its own), ``</s>`` appended,
    padded with ``<pad>`` to ``min_tokens``; longer prompts are kept whole (T5's relative positions
    have no length limit)."""
    ids: list[int] = []
    weights: list[float] = []
    for seg in parse_prompt(text, allow_break=False):
        toks = tokenizer.encode(seg.text)
        ids += toks
        weights += [seg.weight] * len(toks)
    ids.append(tokenizer.eos_id)
    weights.append(1.0)
    pad = max(0, min_tokens - len(ids))
    return ids + [tokenizer.pad_id] * pad, weights + [1.0] * pad


def t5_encode(model: T5Encoder, tokenizer: T5Tokenizer, text: str, min_tokens: int = T5_MIN_TOKENS) -> torch.Tensor:
    """T5 hidden states ``[1, L, d_model]`` of a prompt, unmasked as FLUX was trained.

    Weighted tokens are interpolated from the empty prompt's features (ComfyUI's rule):
    ``z = z_empty + (z - z_empty) * w``; an unweighted prompt is encoded exactly as
    diffusers' FluxPipeline does it."""
    ids, weights = _t5_tokens(tokenizer, text, min_tokens)
    device = next(model.parameters()).device
    z = model(torch.tensor([ids], dtype=torch.long, device=device))
    if all(w == 1.0 for w in weights):
        return z
    empty, _ = _t5_tokens(tokenizer, "", len(ids))
    z_empty = model(torch.tensor([empty], dtype=torch.long, device=device))
    w = torch.tensor(weights, dtype=z.dtype, device=z.device)[None, :, None]
    return z_empty + (z - z_empty) * w
