"""MODEL and CLIP objects for Z-Image: the single-stream DiT on flow sampling, and the Qwen3-4B encoder.

They plug into the sampler nodes like FLUX's and SD3's (:class:`~.flux_runtime.FlowTransformerModel`:
``denoiser()``, ``condition_kwargs()``, LoRA through ``unet``/``with_unet``).

Conditioning for Z-Image (as diffusers' ZImagePipeline and ComfyUI build it): the prompt is
wrapped in Qwen3's chat template for one user turn (:data:`~.models.qwen3.ZIMAGE_TEMPLATE`),
tokenised without padding, and the hidden states *before the last decoder layer*
(``hidden_states[-2]``) of its real tokens are the caption, ``[1, L, 2560]``; there is no
pooled vector.  Prompt weights are not parsed (ComfyUI's Z-Image tokenizer disables them):
``(word:1.2)`` reaches the encoder as written.  A prompt and its negative have different
lengths, so CFG evaluates them in two model calls; each call sees only its own tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from .families import FamilyRules
from .flux_runtime import ConditioningMismatch, FlowTransformerModel, _param_bytes
from .models.qwen3 import Qwen3Encoder, Qwen3Tokenizer
from .models.zimage import ZImageTransformer
from .runtime import Conditioning
from .sampling.model_sampling import make_denoiser

#: Hidden layer Z-Image conditions on (transformers' ``hidden_states`` index; ComfyUI's ``layer_idx=-2``).
ZIMAGE_HIDDEN_LAYER = -2
_FIX = "encode the prompt with Z-Image's text encoder: CLIPLoader (type lumina2) with the Qwen3-4B file"


@dataclass(frozen=True)
class ZImageModel(FlowTransformerModel):
    """MODEL: a Z-Image transformer (see :class:`~.flux_runtime.FlowTransformerModel`); no guidance input."""

    transformer: ZImageTransformer

    has_guidance = False

    @property
    def latent_channels(self) -> int:
        return self.transformer.config.in_channels

    def denoiser(self) -> Callable[..., torch.Tensor]:
        """``(x, sigma, context=) -> x0``.  The schedule hands the model ``sigma * multiplier`` (1 for
        Z-Image; ModelSamplingSD3 keeps whatever the model had); the transformer takes sigma itself."""
        transformer, dtype, multiplier = self.transformer, self.dtype, float(self.schedule.multiplier)

        def model_fn(x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                     controls: Sequence[Any] = ()) -> torch.Tensor:
            sigma = t / multiplier if multiplier != 1.0 else t
            return transformer(x.to(dtype), sigma.to(dtype), context.to(dtype)).to(x.dtype)

        return make_denoiser(model_fn, self.schedule, "flow")

    def condition_kwargs(self, cond: Conditioning, batch: int, height: int, width: int) -> dict[str, Any]:
        """The caption's Qwen3 features, broadcast to the batch."""
        cfg = self.transformer.config
        width_in = cond.context.shape[-1]
        if width_in != cfg.cap_feat_dim or cond.pooled is not None:
            what = (f"{width_in}-wide features and a pooled vector (a CLIP/T5 text encoder)" if cond.pooled is not None
                    else f"{width_in}-wide features")
            raise ConditioningMismatch(
                f"the prompt was encoded into {what}, but this Z-Image model takes the {cfg.cap_feat_dim}-wide "
                "hidden states of a Qwen3 text encoder (Qwen3-4B)", _FIX)
        if cond.controls:
            raise ConditioningMismatch("ControlNets for Z-Image are not supported yet")
        return {"context": cond.context.expand(batch, -1, -1)}


@dataclass(frozen=True)
class ZImageTextEncoder:
    """CLIP: Z-Image's Qwen3 text encoder with its tokenizer (the encoder's tokenizer.json, or the built-in one)."""

    qwen3: Qwen3Encoder
    tokenizer: Qwen3Tokenizer
    rules: FamilyRules
    device: torch.device
    dtype: torch.dtype = torch.float32
    clip_skip: int | None = None  # accepted from CLIP Set Last Layer; Z-Image always uses hidden_states[-2]
    patches: tuple[str, ...] = ()
    hidden_layer: int = ZIMAGE_HIDDEN_LAYER

    @property
    def encoders(self) -> tuple[torch.nn.Module, ...]:
        return (self.qwen3,)

    def __nodegraph_nbytes__(self) -> int:
        return _param_bytes(self.qwen3)

    def with_encoders(self, encoders: Sequence[torch.nn.Module], patch: str) -> ZImageTextEncoder:
        """A copy with the patched encoder (LoRA)."""
        (qwen3,) = encoders
        return replace(self, qwen3=qwen3, patches=self.patches + (patch,))

    def encode(self, text: str) -> Conditioning:
        """The hidden states of the prompt's real tokens (chat template applied), ``[1, L, hidden]``."""
        ids = self.tokenizer.token_ids(text)
        param = next(self.qwen3.parameters())
        with torch.no_grad():
            states = self.qwen3(torch.tensor([ids], dtype=torch.long, device=param.device),
                                hidden_layer=self.hidden_layer, dtype=self.dtype)
        return Conditioning(states.float().cpu())
