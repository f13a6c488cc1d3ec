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
from .text.embeddings import EmbeddingSlots
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
class Area:
    """Where a conditioning entry applies: a rectangle in image pixels (ConditioningSetArea) or in
    fractions of the image (ConditioningSetAreaPercentage).  Kept in the user's units and turned
    into latent cells only when sampling, with the VAE's downscale (ComfyUI hard-codes 8)."""

    height: float
    width: float
    y: float
    x: float
    fractions: bool = False

    def in_latent(self, h: int, w: int, downscale: int) -> tuple[int, int, int, int]:
        """``(height, width, y, x)`` in latent cells of an ``h`` x ``w`` latent, clamped to it."""
        if self.fractions:  # ComfyUI: rounded, at least one cell
            hh, ww = max(1, round(self.height * h)), max(1, round(self.width * w))
            yy, xx = round(self.y * h), round(self.x * w)
        else:
            f = downscale
            hh, ww, yy, xx = (int(v) // f for v in (self.height, self.width, self.y, self.x))
        if yy >= h or xx >= w or hh <= 0 or ww <= 0:
            raise ValueError(f"the conditioning area (x={self.x}, y={self.y}, {self.width}x{self.height}"
                             f"{' of the image' if self.fractions else ' px'}) lies outside the "
                             f"{w * downscale}x{h * downscale} image")
        return min(hh, h - yy), min(ww, w - xx), yy, xx


@dataclass(frozen=True)
class Conditioning:
    """One conditioning entry: an encoded prompt (cross-attention context [1, L, D], pooled
    vector, SDXL's ``y`` vector, FLUX-dev's distilled ``guidance``; None = the model's default),
    the ControlNets applied to it, and where and when it acts (ComfyUI's meaning):

    * ``area``: only this rectangle of the latent is denoised with it (edges feathered);
    * ``mask`` ([H, W] or [B, H, W], 0..1, any resolution) times ``mask_strength`` weights it per
      pixel; ``set_area_to_bounds`` crops the model call to the mask's bounding box;
    * ``strength`` weights it against the other entries it is combined with;
    * it is skipped outside ``start_percent``..``end_percent`` of the schedule.

    A CONDITIONING wire carries one entry (as text encoders make) or a :class:`ConditioningList`.
    """

    context: torch.Tensor
    pooled: torch.Tensor | None = None
    y: torch.Tensor | None = None
    controls: tuple[ControlHint, ...] = ()
    guidance: float | None = None
    area: Area | None = None
    mask: torch.Tensor | None = None
    mask_strength: float = 1.0
    set_area_to_bounds: bool = False
    strength: float = 1.0
    start_percent: float = 0.0
    end_percent: float = 1.0
    #: InpaintModelConditioning / InstructPixToPixConditioning (ComfyUI's ``concat_latent_image`` and
    #: ``concat_mask``): an image latent [B, C, h, w] (in VAE scaling ``concat_scaling``, None = the model's)
    #: and a pixel mask that models with extra input channels take next to the noisy latent (see
    #: :mod:`.inpaint`); models without extra channels ignore them, as in ComfyUI.
    concat_latent: torch.Tensor | None = None
    concat_mask: torch.Tensor | None = None
    concat_scaling: tuple[float, float] | None = None
    #: SDXL micro-conditioning set by a text encode node: (height, width, crop_h, crop_w, aesthetic score)
    #: for the refiner (ComfyUI's CLIPTextEncodeSDXLRefiner), (height, width, crop_h, crop_w, target_height,
    #: target_width) for the base (CLIPTextEncodeSDXL); the model turns it into ``y`` when sampling.
    size_cond: tuple[float, ...] | None = None

    @property
    def entries(self) -> tuple[Conditioning, ...]:
        return (self,)

    @property
    def is_plain(self) -> bool:
        """True for a whole-image, full-strength, whole-schedule entry (what a text encoder makes)."""
        return (self.area is None and self.mask is None and self.strength == 1.0
                and self.start_percent <= 0.0 and self.end_percent >= 1.0)

    def __nodegraph_nbytes__(self) -> int:
        tensors = [self.context, self.pooled, self.y, self.mask, self.concat_latent, self.concat_mask]
        tensors += [c.hint for c in self.controls]
        return sum(t.element_size() * t.nelement() for t in tensors if t is not None)


@dataclass(frozen=True)
class ConditioningList:
    """CONDITIONING with several entries (ConditioningCombine): the sampler evaluates every
    entry and blends their predictions by area, mask and strength."""

    items: tuple[Conditioning, ...]

    @property
    def entries(self) -> tuple[Conditioning, ...]:
        return self.items

    def __len__(self) -> int:
        return len(self.items)

    def __nodegraph_nbytes__(self) -> int:
        return sum(c.__nodegraph_nbytes__() for c in self.items)


def conditioning_entries(value: Any) -> tuple[Conditioning, ...]:
    """The entries of a CONDITIONING value (one entry, a list, or a plain sequence of entries)."""
    if isinstance(value, (Conditioning, ConditioningList)):
        return value.entries
    return tuple(value)


def conditioning_value(entries: Sequence[Conditioning]) -> Conditioning | ConditioningList:
    """The wire value for ``entries``: a single entry stays a plain :class:`Conditioning`."""
    items = tuple(entries)
    if not items:
        raise ValueError("a conditioning needs at least one entry")
    return items[0] if len(items) == 1 else ConditioningList(items)


def map_entries(value: Any, fn: Callable[[Conditioning], Conditioning]) -> Conditioning | ConditioningList:
    """Apply ``fn`` to every entry of a CONDITIONING value (what ControlNet/Guidance/SetArea nodes do)."""
    return conditioning_value([fn(c) for c in conditioning_entries(value)])


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
        return self.unet.config.in_channels - self.concat_channels

    @property
    def concat_channels(self) -> int:
        """Input channels beyond the latent (5 for 9-channel inpainting UNets: mask + masked image; 4 for
        8-channel InstructPix2Pix UNets: the image latent)."""
        cfg = self.unet.config
        return max(0, cfg.in_channels - cfg.out_channels)

    def __nodegraph_nbytes__(self) -> int:
        return sum(t.element_size() * t.nelement() for t in (*self.unet.parameters(), *self.unet.buffers()))

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
                     y: torch.Tensor | None = None, controls: Sequence[ControlHint] = (),
                     concat: torch.Tensor | None = None) -> torch.Tensor:
            x = x_in.to(dtype)
            ctx = context.to(dtype) if context is not None else None
            yy = y.to(dtype) if y is not None else None
            residuals: ControlResiduals | None = None
            t0 = float(t.reshape(-1)[0])
            for c in controls:
                lo, hi = control_window(c)
                if not (lo - 1e-3 <= t0 <= hi + 1e-3) or c.strength == 0:
                    continue
                hint = _fit_hint(c.hint.to(x.device, dtype), x, c.model)
                r = c.model(x, hint, t, ctx, yy, strength=c.strength)
                residuals = r if residuals is None else residuals + r
            if concat is not None:  # inpainting UNets: [latent, mask, masked image] after input scaling
                x = torch.cat([x, concat.to(x.device, dtype)], dim=1)
            return unet(x, t, ctx, y=yy, control=residuals).to(x_in.dtype)

        return make_denoiser(model_fn, schedule, self.rules.prediction_type)

    def condition_kwargs(self, cond: Conditioning, batch: int, height: int, width: int) -> dict[str, Any]:
        """Keyword arguments of the model call for one conditioning (see :func:`as_context`)."""
        return _unet_context(cond, batch, self, height, width)

    def concat_input(self, cond: Conditioning, batch: int, h: int, w: int, *, latent_image: torch.Tensor | None = None,
                     denoise_mask: torch.Tensor | None = None) -> torch.Tensor | None:
        """The extra input channels for an ``h`` x ``w`` latent (None for ordinary 4-channel UNets)."""
        if not self.concat_channels:
            return None
        from .inpaint import unet_concat

        return unet_concat(cond, concat_channels=self.concat_channels, latent_channels=self.latent_channels,
                           batch=batch, h=h, w=w, scaling=(self.rules.vae_scaling_factor, self.rules.vae_shift_factor),
                           latent_image=latent_image, denoise_mask=denoise_mask)


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
        return sum(t.element_size() * t.nelement() for e in self.encoders for t in (*e.parameters(), *e.buffers()))

    def encode(self, text: str, embeddings: EmbeddingSlots | None = None, *,
               text_l: str | None = None) -> Conditioning:
        """Encode a prompt the way this family was trained (layer, final norm, padding);
        ``embeddings`` resolves ``embedding:name`` words (textual inversion).

        ``text_l`` (SDXL only, ComfyUI's CLIPTextEncodeSDXL) gives CLIP-L its own prompt while bigG
        reads ``text``; the shorter of the two is padded with empty-prompt chunks, as ComfyUI pads
        the token lists, so both halves of the context keep the same length."""
        skip = self.clip_skip
        if len(self.encoders) == 1:
            key = "clip_g" if self.rules.name == REFINER else None  # the refiner's encoder is SDXL's bigG
            cond, pooled = encode(self.encoders[0], self.tokenizer, text, settings=self.rules.encoder,
                                  clip_skip=skip, window=self.window, embeddings=embeddings, embedding_key=key)
            return Conditioning(cond.float().cpu(), pooled.float().cpu())
        clip_l, clip_g = self.encoders

        def run_l(prompt: str) -> torch.Tensor:
            return encode(clip_l, self.tokenizer, prompt, settings=self.rules.encoder, clip_skip=skip,
                          window=self.window, embeddings=embeddings, embedding_key="clip_l")[0]

        def run_g(prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
            return encode(clip_g, self.tokenizer, prompt, settings=SDXL_G_SETTINGS, clip_skip=skip,
                          window=self.window, embeddings=embeddings, embedding_key="clip_g")

        cond_l = run_l(text if text_l is None else text_l)
        cond_g, pooled = run_g(text)
        if cond_l.shape[1] < cond_g.shape[1]:
            cond_l = _pad_chunks(cond_l, run_l(""), cond_g.shape[1])
        elif cond_g.shape[1] < cond_l.shape[1]:
            cond_g = _pad_chunks(cond_g, run_g("")[0], cond_l.shape[1])
        context = torch.cat([cond_l, cond_g], dim=-1).float().cpu()
        return Conditioning(context, pooled.float().cpu())


def _pad_chunks(cond: torch.Tensor, empty: torch.Tensor, length: int) -> torch.Tensor:
    """``cond`` [B, n, D] extended to ``length`` tokens with repeats of the empty prompt's chunk ``empty``."""
    repeats = (length - cond.shape[1]) // empty.shape[1]
    return torch.cat([cond, empty.expand(cond.shape[0], -1, -1).repeat(1, repeats, 1)], dim=1)


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


def _fit_hint(hint: torch.Tensor, x: torch.Tensor, model: ControlNet) -> torch.Tensor:
    """A ControlNet hint scaled to the latent it is applied to: an area entry denoises a crop, and
    (like ComfyUI) its ControlNet sees the whole hint resized to the crop."""
    f = model.hint_downscale
    size = (x.shape[-2] * f, x.shape[-1] * f)
    if tuple(hint.shape[-2:]) == size:
        return hint
    return torch.nn.functional.interpolate(hint, size=size, mode="nearest-exact")


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
        if model.rules.name == REFINER:
            # The refiner's y: pooled ++ (height, width, crop_h, crop_w, aesthetic score), 5 numbers
            # (ComfyUI's SDXLRefiner.encode_adm; default: the image size, no crop, score 6).
            numbers = cond.size_cond or (height, width, 0, 0, REFINER_ASCORE)
            if len(numbers) != 5:
                raise ValueError("this SDXL refiner conditioning carries base-model size numbers; encode the "
                                 "prompt with the refiner's text encode node")
        else:
            # SDXL base: (original h, w, crop top, left, target h, w) from Text Encode (SDXL), else the image size
            numbers = cond.size_cond or (height, width, 0, 0, height, width)
            if len(numbers) != 6:
                raise ValueError("this conditioning carries the SDXL refiner's aesthetic score; encode the prompt "
                                 "for the base model with Text Encode or Text Encode (SDXL)")
        embed_dim = (adm - pooled.shape[-1]) // len(numbers)
        sizes = torch.tensor([list(numbers)], dtype=torch.float32).expand(batch, -1)
        kw["y"] = sdxl_vector_condition(pooled, sizes, embed_dim)
    kw["controls"] = cond.controls
    return kw


REFINER = "sdxl-refiner"
#: ComfyUI's default aesthetic scores for the refiner: 6 for positive prompts, 2.5 for negative ones.
REFINER_ASCORE, REFINER_NEGATIVE_ASCORE = 6.0, 2.5


def negative_defaults(value: Any, model: Any, height: int, width: int) -> Any:
    """A negative prompt for the SDXL refiner gets ComfyUI's negative aesthetic score (2.5) unless its
    text encode node set one; other models' conditioning is returned as it is."""
    if getattr(getattr(model, "rules", None), "name", None) != REFINER:
        return value
    return map_entries(value, lambda c: c if c.y is not None or c.size_cond is not None else
                       replace(c, size_cond=(height, width, 0, 0, REFINER_NEGATIVE_ASCORE)))


def sampling_regions(value: Any, batch: int, model: Any, height: int, width: int,
                     downscale: int, *, latent_image: torch.Tensor | None = None,
                     denoise_mask: torch.Tensor | None = None) -> dict[str, Any] | list[Any]:
    """What the sampler needs for one CONDITIONING value.

    A single plain entry gives the model-call kwargs (the one-call-per-side fast path, unchanged
    since before lists existed); anything else gives a list of
    :class:`~.sampling.composite.Region` with areas and masks in latent cells of the
    ``height`` x ``width`` image (``downscale`` = the VAE's) and timestep windows in sigmas of
    the model's schedule.  Models with extra input channels (inpainting, FLUX Fill/Canny/Depth) also get
    ``concat`` (see :mod:`.inpaint`), built from the entry's image/mask or else the sampler's
    ``latent_image`` and ``denoise_mask``.  Raises ``ValueError`` for entries that do not fit the model or image.
    """
    entries = conditioning_entries(value)
    h, w = height // downscale, width // downscale

    def context(c: Conditioning) -> dict[str, Any]:
        kw = as_context(c, batch, model, height, width)
        concat_input = getattr(model, "concat_input", None)
        cat = None if concat_input is None else concat_input(c, batch, h, w, latent_image=latent_image,
                                                              denoise_mask=denoise_mask)
        if cat is not None:
            kw["concat"] = cat
        return kw

    if len(entries) == 1 and entries[0].is_plain:
        return context(entries[0])
    from .sampling.composite import Region

    out = []
    for c in entries:
        area = c.area.in_latent(h, w, downscale) if c.area is not None else None
        mask = None
        if c.mask is not None:
            mask = _latent_mask(c.mask, h, w)
            if batch % mask.shape[0]:
                raise ValueError(f"a conditioning mask holds {mask.shape[0]} masks, which does not divide the "
                                 f"latent batch of {batch}; use one mask or one per latent")
            if c.set_area_to_bounds:
                area = _mask_bounds(mask, h, w)
        out.append(Region(context(c), area, mask, c.mask_strength, c.strength,
                          model.schedule.percent_to_sigma(c.start_percent),
                          model.schedule.percent_to_sigma(c.end_percent)))
    return out


def _latent_mask(mask: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """A MASK ([H, W] or [B, H, W]) resized to the latent ([B, h, w], bilinear as ComfyUI)."""
    m = mask.float()
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise ValueError(f"a conditioning mask must be [H, W] or [B, H, W], got shape {tuple(mask.shape)}")
    if m.shape[-2:] != (h, w):
        m = torch.nn.functional.interpolate(m[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    return m


def _mask_bounds(mask: torch.Tensor, h: int, w: int) -> tuple[int, int, int, int]:
    """ComfyUI's "mask bounds": the box of non-zero cells over the batch, at least 8 cells a side
    (an all-zero mask gives the 8x8 corner, which its zero weight makes a no-op)."""
    nz = torch.nonzero(mask.abs().amax(dim=0))
    if nz.numel() == 0:
        return min(8, h), min(8, w), 0, 0
    y0, x0 = (int(v) for v in nz.min(dim=0).values)
    y1, x1 = (int(v) for v in nz.max(dim=0).values)
    hh, ww = max(8, y1 - y0 + 1), max(8, x1 - x0 + 1)
    return min(hh, h - y0), min(ww, w - x0), y0, x0
