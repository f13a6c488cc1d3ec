"""The objects that travel on MODEL, CLIP, VAE, CONDITIONING, LATENT and CONTROL_NET wires.

They are small immutable wrappers around the torch modules plus the facts
needed to use them correctly (schedule, prediction type, tokenizer, encoder
settings, latent scaling).  Nodes never mutate them: the engine caches them
and shares them between runs, so a LoRA produces a *new* ``DiffusionModel``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .families import SDXL_G_SETTINGS, FamilyRules
from .models.clip_text import ClipTextModel
from .models.controlnet import ControlNet
from .models.unet import ControlResiduals, UNetModel, sdxl_vector_condition
from .models.vae import AutoencoderKL
from .sampling.model_sampling import DiscreteSchedule, make_denoiser
from .text.encode import encode
from .text.tokenizer import ClipTokenizer


@dataclass(frozen=True)
class ControlHint:
    """One applied ControlNet: the model, its hint image (B,3,H,W in 0..1) and when it acts."""

    model: ControlNet
    hint: torch.Tensor
    strength: float = 1.0
    start_percent: float = 0.0
    end_percent: float = 1.0


@dataclass(frozen=True)
class Conditioning:
    """An encoded prompt: cross-attention context [1, L, D], pooled vector, SDXL's
    ``y`` vector, the ControlNets applied to it, and (FLUX-dev) the distilled
    guidance strength set by a FluxGuidance node (None = the model's default)."""

    context: torch.Tensor
    pooled: torch.Tensor | None = None
    y: torch.Tensor | None = None
    controls: tuple[ControlHint, ...] = ()
    guidance: float | None = None

    def __nodegraph_nbytes__(self) -> int:
        tensors = [self.context, self.pooled, self.y] + [c.hint for c in self.controls]
        return sum(t.element_size() * t.nelement() for t in tensors if t is not None)


@dataclass(frozen=True)
class Latent:
    """Latent images [B, C, h, w] (CPU, float32) with an optional inpainting mask
    (1 = repaint) at any resolution, and the pixel/latent factor of the VAE that
    made them (so pixel sizes in nodes mean what the user thinks)."""

    samples: torch.Tensor
    noise_mask: torch.Tensor | None = None
    downscale: int = 8
    #: (scaling, shift) of the VAE space the model that sampled these latents was trained in (its family
    #: rules); lets a VAE whose scaling could only be guessed from the file decode them right (SD3 vs FLUX).
    scaling: tuple[float, float] | None = None


@dataclass(frozen=True)
class DiffusionModel:
    """MODEL: a UNet with the schedule and prediction type it was trained with."""

    unet: UNetModel
    schedule: DiscreteSchedule
    rules: FamilyRules
    device: torch.device
    dtype: torch.dtype
    patches: tuple[str, ...] = ()  # descriptions of merged LoRAs, for display

    @property
    def latent_channels(self) -> int:
        return self.unet.config.in_channels

    def __nodegraph_nbytes__(self) -> int:
        return sum(p.element_size() * p.nelement() for p in self.unet.parameters())

    def with_unet(self, unet: UNetModel, patch: str) -> DiffusionModel:
        return replace(self, unet=unet, patches=self.patches + (patch,))

    def denoiser(self) -> Callable[..., torch.Tensor]:
        """``(x, sigma, context=, y=, controls=) -> x0`` on this model's device and dtype."""
        unet, schedule, dtype = self.unet, self.schedule, self.dtype
        windows: dict[int, tuple[float, float]] = {}

        def control_window(c: ControlHint) -> tuple[float, float]:
            # Active for timesteps between start and end percent of the schedule.
            key = id(c)
            if key not in windows:
                t_hi = float(schedule.sigma_to_t(torch.tensor(schedule.percent_to_sigma(c.start_percent))))
                t_lo = float(schedule.sigma_to_t(torch.tensor(schedule.percent_to_sigma(c.end_percent))))
                windows[key] = (t_lo, t_hi)
            return windows[key]

        def model_fn(x_in: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None,
                     y: torch.Tensor | None = None, controls: Sequence[ControlHint] = ()) -> torch.Tensor:
            x = x_in.to(dtype)
            ctx = context.to(dtype) if context is not None else None
            yy = y.to(dtype) if y is not None else None
            residuals: ControlResiduals | None = None
            t0 = float(t.reshape(-1)[0])
            for c in controls:
                lo, hi = control_window(c)
                if not (lo - 1e-3 <= t0 <= hi + 1e-3) or c.strength == 0:
                    continue
                hint = c.hint.to(x.device, dtype)
                r = c.model(x, hint, t, ctx, yy, strength=c.strength)
                residuals = r if residuals is None else residuals + r
            return unet(x, t, ctx, y=yy, control=residuals).to(x_in.dtype)

        return make_denoiser(model_fn, schedule, self.rules.prediction_type)

    def condition_kwargs(self, cond: Conditioning, batch: int, height: int, width: int) -> dict[str, Any]:
        """Keyword arguments of the model call for one conditioning (see :func:`as_context`)."""
        return _unet_context(cond, batch, self, height, width)


@dataclass(frozen=True)
class TextEncoder:
    """CLIP: one text encoder (SD1/SD2) or two (SDXL: CLIP-L + bigG) with the tokenizer."""

    encoders: tuple[ClipTextModel, ...]
    tokenizer: ClipTokenizer
    rules: FamilyRules
    device: torch.device
    clip_skip: int | None = None  # set by the CLIP Set Last Layer node
    patches: tuple[str, ...] = field(default=())

    @property
    def window(self) -> int:
        return self.encoders[0].config.max_positions

    def __nodegraph_nbytes__(self) -> int:
        return sum(p.element_size() * p.nelement() for e in self.encoders for p in e.parameters())

    def encode(self, text: str) -> Conditioning:
        """Encode a prompt the way this family was trained (layer, final norm, padding)."""
        skip = self.clip_skip
        if len(self.encoders) == 1:
            cond, pooled = encode(self.encoders[0], self.tokenizer, text, settings=self.rules.encoder,
                                  clip_skip=skip, window=self.window)
            return Conditioning(cond.float().cpu(), pooled.float().cpu())
        clip_l, clip_g = self.encoders
        cond_l, _ = encode(clip_l, self.tokenizer, text, settings=self.rules.encoder, clip_skip=skip,
                           window=self.window)
        cond_g, pooled = encode(clip_g, self.tokenizer, text, settings=SDXL_G_SETTINGS, clip_skip=skip,
                                window=self.window)
        n = min(cond_l.shape[1], cond_g.shape[1])
        context = torch.cat([cond_l[:, :n], cond_g[:, :n]], dim=-1).float().cpu()
        return Conditioning(context, pooled.float().cpu())


@dataclass(frozen=True)
class VAEModel:
    """VAE: the autoencoder plus where it runs."""

    vae: AutoencoderKL
    device: torch.device
    dtype: torch.dtype
    #: True when the latent scaling was guessed from the file's shapes (SD3's and FLUX's 16-channel VAEs
    #: have identical layouts); VAE Decode then follows the sampling model's family (``Latent.scaling``).
    scaling_guessed: bool = False

    @property
    def guessed_scaling(self) -> tuple[float, float] | None:
        """(scaling, shift) this VAE encodes with when it was only guessed (the sampler converts), else None."""
        cfg = self.vae.config
        return (cfg.scaling_factor, cfg.shift_factor) if self.scaling_guessed else None

    def in_own_scaling(self, latent: Latent) -> torch.Tensor:
        """``latent.samples`` re-expressed in this VAE's scaling when it was guessed and the sampling
        model's family says otherwise: ``z' = ((z / s + b) - b') * s'``."""
        cfg = self.vae.config
        if not self.scaling_guessed or latent.scaling is None or latent.scaling == (cfg.scaling_factor,
                                                                                  cfg.shift_factor):
            return latent.samples
        scale, shift = latent.scaling
        return (latent.samples / scale + shift - cfg.shift_factor) * cfg.scaling_factor

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.vae.config.ch_mult) - 1)

    @property
    def latent_channels(self) -> int:
        return self.vae.config.embed_dim

    def __nodegraph_nbytes__(self) -> int:
        return sum(p.element_size() * p.nelement() for p in self.vae.parameters())

    @torch.no_grad()
    def decode(self, samples: torch.Tensor, *, tile: int | None = None, overlap: int = 16) -> torch.Tensor:
        """Latents → IMAGE [B,H,W,C] in 0..1 on the CPU."""
        z = samples.to(self.device, self.dtype)
        x = self.vae.decode_tiled(z, tile=tile, overlap=overlap) if tile else self.vae.decode(z)
        return ((x.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu()

    @torch.no_grad()
    def encode(self, image: torch.Tensor, *, tile: int | None = None, overlap: int = 64) -> torch.Tensor:
        """IMAGE [B,H,W,C] in 0..1 → latents (CPU float32).  Sizes are cropped to a
        multiple of the VAE's downscale factor, as other tools do."""
        f = self.downscale
        h, w = image.shape[1] // f * f, image.shape[2] // f * f
        x = image[:, :h, :w, :3].permute(0, 3, 1, 2).to(self.device, self.dtype) * 2 - 1
        z = self.vae.encode_tiled(x, tile=tile, overlap=overlap) if tile else self.vae.encode(x)
        return z.float().cpu()


def as_context(cond: Conditioning, batch: int, model: Any, height: int, width: int) -> dict[str, Any]:
    """Keyword arguments of the model call for one conditioning, broadcast to the batch.

    Each MODEL class knows what its network takes (``condition_kwargs``); raises
    ``ValueError`` when the conditioning does not fit the model (wrong text encoder)."""
    return model.condition_kwargs(cond, batch, height, width)


def _unet_context(cond: Conditioning, batch: int, model: DiffusionModel, height: int, width: int) -> dict[str, Any]:
    """UNet models take ``context`` (and ControlNets).

    Models with a "vector" input (SDXL's ``label_emb``) get ``y`` = pooled text
    ++ Fourier features of (original size, crop, target size); like diffusers we
    use the generated image's size for both sizes and no crop.
    """
    kw: dict[str, Any] = {"context": cond.context.expand(batch, -1, -1)}
    adm = model.unet.config.adm_in_channels
    if cond.y is not None:
        kw["y"] = cond.y.expand(batch, -1)
    elif adm:
        if cond.pooled is None:
            raise ValueError("this model needs a pooled text embedding (SDXL); the conditioning has none")
        pooled = cond.pooled.expand(batch, -1)
        embed_dim = (adm - pooled.shape[-1]) // 6
        sizes = torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32).expand(batch, -1)
        kw["y"] = sdxl_vector_condition(pooled, sizes, embed_dim)
    kw["controls"] = cond.controls
    return kw
