"""TAESD-architecture preview decoders (madebyollin/taesd), in their own key layout.

A TAESD decoder turns a model-space latent (the scaled latent the sampler works in) into
an RGB image in 0..1 with a few plain 3x3 convolutions: cheap enough to show the x0
estimate after every sampler step.  The files users already have are ComfyUI's
``models/vae_approx/`` ones: ``taesd_decoder`` (SD1/SD2), ``taesdxl_decoder`` (SDXL),
``taesd3_decoder`` (SD3) and ``taef1_decoder`` (FLUX), as ``.safetensors`` or ``.pth``.

The layout is the original ``nn.Sequential``::

    0 Clamp (tanh(x/3)*3)   1 conv(latent, C)   2 ReLU
    Block x n1, Upsample x2, conv(C, C, bias=False), Block x n2, Upsample, conv, ..., Block x nk, conv(C, 3)

with ``Block`` = ``conv`` (3 convs with ReLUs between), ``skip`` (identity) and ``fuse`` (ReLU),
so a file's keys are ``1.weight``, ``3.conv.0.weight``, ...  Keys may carry a ``taesd_decoder.``
or ``decoder.`` prefix (full TAESD files); diffusers' ``AutoencoderTiny`` names the same layers
``decoder.layers.N`` with N one less (it has no Clamp module).  The number of upsampling stages,
blocks per stage and the width are read from the keys, not assumed, so a TAESD decoder for a VAE
that downsamples 4x (the shipped demo) loads with the same code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn


class Clamp(nn.Module):
    """Soft clamp of the input latent to about +-3 (TAESD's first layer)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    """TAESD residual block: three 3x3 convs with ReLUs between, plus the input, then ReLU."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(n_in, n_out, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(n_out, n_out, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(n_out, n_out, 3, padding=1))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.conv(x) + self.skip(x))


@dataclass(frozen=True)
class TAESDConfig:
    """Shape of a TAESD decoder: latent channels, width, and blocks per stage (an upsampling
    x2 between consecutive stages, so ``len(blocks) - 1`` doublings).  TAESD itself is
    ``(4 or 16, 64, (3, 3, 3, 1))``: 8x."""

    latent_channels: int = 4
    width: int = 64
    blocks: tuple[int, ...] = (3, 3, 3, 1)

    @property
    def upscale(self) -> int:
        return 2 ** (len(self.blocks) - 1)


class TAESDDecoder(nn.Sequential):
    """The decoder as TAESD's ``nn.Sequential`` (its parameter names are the file's keys).

    ``forward`` takes model-space latents [B, C, h, w] and returns images in 0..1."""

    def __init__(self, config: TAESDConfig) -> None:
        c = config.width
        layers: list[nn.Module] = [Clamp(), nn.Conv2d(config.latent_channels, c, 3, padding=1), nn.ReLU()]
        for i, n in enumerate(config.blocks):
            layers += [Block(c, c) for _ in range(n)]
            if i + 1 < len(config.blocks):
                layers += [nn.Upsample(scale_factor=2), nn.Conv2d(c, c, 3, padding=1, bias=False)]
        layers.append(nn.Conv2d(c, 3, 3, padding=1))
        super().__init__(*layers)
        self.config = config


_PREFIXES = ("taesd_decoder.", "decoder.", "first_stage_model.taesd_decoder.")


def normalise_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys in the plain ``nn.Sequential`` layout (``1.weight``, ``3.conv.0.weight``, ...).

    Accepts the plain layout, a ``taesd_decoder.``/``decoder.`` prefix, and diffusers'
    ``decoder.layers.N`` (N + 1 in TAESD's numbering).  Encoder keys of a full file are dropped."""
    if any(k.startswith("decoder.layers.") for k in state):
        out = {}
        for k, v in state.items():
            if k.startswith("decoder.layers."):
                idx, rest = k[len("decoder.layers."):].split(".", 1)
                out[f"{int(idx) + 1}.{rest}"] = v
        return out
    for prefix in _PREFIXES:
        if any(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return dict(state)


def config_from_state(state: Mapping[str, torch.Tensor]) -> TAESDConfig:
    """Read the decoder's shape from its (normalised) keys: the first conv gives latent channels
    and width, ``N.conv.0.weight`` keys are blocks, a bias-less ``N.weight`` is the conv after an
    upsampling (it ends a stage), the last ``N.weight`` with 3 outputs is the output conv."""
    layers: dict[int, set[str]] = {}
    for k in state:
        m = re.match(r"(\d+)\.(.+)$", k)
        if m is None:
            raise ValueError(f"not a TAESD decoder: unexpected key {k!r}")
        layers.setdefault(int(m.group(1)), set()).add(m.group(2))
    if 1 not in layers or "weight" not in layers[1]:
        raise ValueError("not a TAESD decoder: no first convolution (key '1.weight')")
    first = state["1.weight"]
    if first.ndim != 4:
        raise ValueError("not a TAESD decoder: '1.weight' is not a convolution")
    blocks: list[int] = [0]
    last = max(layers)
    for idx in sorted(layers):
        if idx <= 1:
            continue
        names = layers[idx]
        if "conv.0.weight" in names:
            blocks[-1] += 1
        elif names == {"weight"} and idx != last:
            blocks.append(0)
        elif idx != last:
            raise ValueError(f"not a TAESD decoder: unexpected layer {idx} ({sorted(names)})")
    if state[f"{last}.weight"].shape[0] != 3:
        raise ValueError("not a TAESD decoder: the last convolution does not output 3 channels")
    return TAESDConfig(latent_channels=int(first.shape[1]), width=int(first.shape[0]), blocks=tuple(blocks))


def decoder_from_state(state: Mapping[str, torch.Tensor]) -> TAESDDecoder:
    """A float32 :class:`TAESDDecoder` holding ``state`` (any accepted key layout)."""
    sd = {k: v.float() for k, v in normalise_keys(state).items()}
    model = TAESDDecoder(config_from_state(sd))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"not a TAESD decoder: missing {sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]}")
    return model.eval().requires_grad_(False)


__all__ = ["Block", "Clamp", "TAESDConfig", "TAESDDecoder", "config_from_state", "decoder_from_state",
           "normalise_keys"]
