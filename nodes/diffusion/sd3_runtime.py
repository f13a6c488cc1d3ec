"""MODEL and CLIP objects for SD3 / SD3.5: the MMDiT on flow sampling, and the CLIP-L + bigG + T5 triple.

They reuse FLUX's machinery (:class:`~.flux_runtime.FlowTransformerModel`, the T5 prompt
encoding, the split-file loaders) and offer the sampler nodes the same surface as every
MODEL/CLIP.

Conditioning for SD3 (as diffusers' StableDiffusion3Pipeline builds it): CLIP-L's and
bigG's *penultimate* hidden states (no final norm) of the 77-token prompt are
concatenated along features (768 + 1280 = 2048), zero-padded to T5's width (4096) and
concatenated along the sequence with T5's hidden states; the vector is CLIP-L's projected
pooled output ++ bigG's.  Any of the three may be absent (TripleCLIPLoader with fewer
files, or an all-in-one file without T5): its part is zeros of the same shape, as
diffusers does -- a missing T5 gives 77 zero tokens.  The model zero-pads a narrower
context to its own width, which is what SD3 does with CLIP-only text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from .families import FamilyRules
from .flux_runtime import ConditioningMismatch, FlowTransformerModel, _param_bytes, t5_encode
from .models.clip_text import ClipTextModel
from .models.mmdit import MMDiT
from .models.t5 import T5Encoder, T5Tokenizer
from .runtime import Conditioning
from .sampling.model_sampling import make_denoiser
from .text.encode import SD1, SDXL_G, chunk_prompt
from .text.tokenizer import ClipTokenizer

#: SD3's T5 prompts are padded to 77 tokens (ComfyUI's SD3 tokenizer; diffusers' max_sequence_length is settable).
SD3_T5_MIN_TOKENS = 77
#: Widths used for the zeros of a missing encoder when nothing else tells them (the released SD3 encoders).
CLIP_L_WIDTH, CLIP_G_WIDTH = 768, 1280


@dataclass(frozen=True)
class SD3Model(FlowTransformerModel):
    """MODEL: an SD3/SD3.5 MMDiT (see :class:`~.flux_runtime.FlowTransformerModel`); no guidance input."""

    transformer: MMDiT

    @property
    def latent_channels(self) -> int:
        return self.transformer.config.in_channels

    has_guidance = False

    def denoiser(self) -> Callable[..., torch.Tensor]:
        """``(x, sigma, context=, pooled=) -> x0`` (x0 = x - sigma * velocity)."""
        transformer, dtype = self.transformer, self.dtype

        def model_fn(x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, pooled: torch.Tensor,
                     controls: Sequence[Any] = ()) -> torch.Tensor:
            return transformer(x.to(dtype), t.to(dtype), context.to(dtype), pooled.to(dtype)).to(x.dtype)

        return make_denoiser(model_fn, self.schedule, "flow")

    def condition_kwargs(self, cond: Conditioning, batch: int, height: int, width: int) -> dict[str, Any]:
        """Joint text sequence (zero-padded to the model's width) and pooled CLIP vector, broadcast to the batch."""
        cfg = self.transformer.config
        width_in = cond.context.shape[-1]
        if cond.pooled is None or width_in > cfg.context_in_dim or cond.pooled.shape[-1] != cfg.pooled_dim:
            raise ConditioningMismatch(
                f"the prompt was encoded with text encoders that give {width_in}-wide features and "
                f"{'no' if cond.pooled is None else cond.pooled.shape[-1]} pooled features, but this SD3 model "
                f"takes features up to {cfg.context_in_dim} wide (T5-XXL) and a {cfg.pooled_dim}-wide CLIP-L + "
                "CLIP-G vector", "encode the prompt with SD3's text encoders: TripleCLIPLoader (clip_l, clip_g, "
                "t5xxl)")
        if cond.controls:
            raise ConditioningMismatch("ControlNets for SD3 are not supported yet")
        context = cond.context
        if width_in < cfg.context_in_dim:
            context = torch.nn.functional.pad(context, (0, cfg.context_in_dim - width_in))
        return {"context": context.expand(batch, -1, -1), "pooled": cond.pooled.expand(batch, -1)}


@dataclass(frozen=True)
class SD3TextEncoder:
    """CLIP: SD3's three text encoders; any may be None (its part of the conditioning is then zeros)."""

    clip_l: ClipTextModel | None
    clip_g: ClipTextModel | None
    t5: T5Encoder | None
    tokenizer: ClipTokenizer | None
    t5_tokenizer: T5Tokenizer | None
    rules: FamilyRules
    device: torch.device
    clip_skip: int | None = None  # accepted from CLIP Set Last Layer; SD3 always uses the penultimate layer
    patches: tuple[str, ...] = ()
    t5_min_tokens: int = SD3_T5_MIN_TOKENS

    @property
    def encoders(self) -> tuple[torch.nn.Module, ...]:
        return tuple(e for e in (self.clip_l, self.clip_g, self.t5) if e is not None)

    def __nodegraph_nbytes__(self) -> int:
        return sum(_param_bytes(e) for e in self.encoders)

    def with_encoders(self, encoders: Sequence[torch.nn.Module], patch: str) -> SD3TextEncoder:
        """A copy with patched encoders (LoRA), given in :attr:`encoders` order (CLIP-L, CLIP-G, T5)."""
        it = iter(encoders)
        l_, g_, t5 = (next(it) if e is not None else None for e in (self.clip_l, self.clip_g, self.t5))
        return replace(self, clip_l=l_, clip_g=g_, t5=t5, patches=self.patches + (patch,))

    def encode(self, text: str) -> Conditioning:
        if not self.encoders:
            raise ConditioningMismatch("this SD3 text encoder holds no model; load at least one file with "
                                       "TripleCLIPLoader")
        with torch.no_grad():
            hl, pl = self._clip(self.clip_l, text, SD1.pad_id, CLIP_L_WIDTH)
            hg, pg = self._clip(self.clip_g, text, SDXL_G.pad_id, CLIP_G_WIDTH)
            clip_ctx = torch.cat([hl, hg], dim=-1)
            pooled = torch.cat([pl, pg], dim=-1)
            if self.t5 is not None and self.t5_tokenizer is not None:
                t5 = t5_encode(self.t5, self.t5_tokenizer, text, self.t5_min_tokens).float().cpu()
            else:
                t5 = torch.zeros(1, clip_ctx.shape[1], clip_ctx.shape[-1])
            if self.clip_l is None and self.clip_g is None:  # no CLIP at all: 77 zero tokens of T5's width
                clip_ctx = torch.zeros(1, clip_ctx.shape[1], t5.shape[-1])
            # the narrower part is zero-padded to the wider one's width (CLIP to T5-XXL's 4096 for the released
            # encoders; a T5 narrower than CLIP-L ++ CLIP-G, as the demo's, is padded instead)
            width = max(t5.shape[-1], clip_ctx.shape[-1])
            clip_ctx = torch.nn.functional.pad(clip_ctx, (0, width - clip_ctx.shape[-1]))
            t5 = torch.nn.functional.pad(t5, (0, width - t5.shape[-1]))
            context = torch.cat([clip_ctx, t5], dim=1)
        return Conditioning(context, pooled)

    def _clip(self, model: ClipTextModel | None, text: str, pad_id: int | None,
              missing_width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(penultimate hidden states [1, 77, w], projected pooled EOS feature [1, w']) of the first chunk,
        or zeros of the released model's width when this encoder is absent."""
        if model is None or self.tokenizer is None:
            return torch.zeros(1, 77, missing_width), torch.zeros(1, missing_width)
        ids, _ = chunk_prompt(self.tokenizer, text, window=model.config.max_positions, pad_id=pad_id)
        param = next(model.parameters())
        out = model(torch.tensor(ids[:1], dtype=torch.long, device=param.device), eos_id=self.tokenizer.eos_id)
        return out.hidden_states[-2].float().cpu(), out.pooled.float().cpu()
