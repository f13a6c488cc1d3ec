"""A tiny SDXL refiner checkpoint in the original layout (random weights), for the refiner tests.

It keeps the release's structural traits: a UNet with linear projections and attention only on the
middle level (the refiner's (0, 4, 4, 0) pattern, shortened), cross-attention on bigG's width alone,
``label_emb`` fed by pooled text ++ 5 Fourier-embedded numbers (original height, width, crop top, left,
aesthetic score: the real 1280 + 5 x 256 = 2560); one text encoder, OpenCLIP bigG with a projection,
under ``conditioner.embedders.0.model.``; a tiny 4x VAE.  Tiny shapes match no real family, so the file
declares ``nodegraph.family = sdxl-refiner`` (a real refiner is recognised from its shapes).
"""

from __future__ import annotations

from pathlib import Path

import torch

from nodes.diffusion.models.unet import UNET_PREFIX, UNetModel
from nodes.diffusion.models.unet_config import UNetConfig
from tests.diffusion.ldm_fixtures import (
    SDXL_POOLED_DIM,
    SDXL_TIME_EMBED_DIM,
    randomize_,
    unet_metadata,
    write_checkpoint,
)
from tests.diffusion.pipeline_fixtures import CLIP_G_WIDTH, CLIP_LAYERS, VAE_PREFIX, make_vae_sd
from tests.diffusion.text_fixtures import make_openclip_sd

REFINER_CLIP = "conditioner.embedders.0.model."
REFINER_UNET_CONFIG = UNetConfig(
    in_channels=4, out_channels=4, model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=(1, 1, 1),
    transformer_depth=(0, 2, 0), transformer_depth_middle=2, transformer_depth_output=(0, 0, 2, 2, 0, 0),
    context_dim=CLIP_G_WIDTH, use_linear_in_transformer=True, num_head_channels=16,
    adm_in_channels=SDXL_POOLED_DIM + 5 * SDXL_TIME_EMBED_DIM,
)


def write_tiny_refiner(path: Path, seed: int = 3) -> dict[str, torch.Tensor]:
    """Write the tiny refiner to ``path``; returns its flat tensors (what a reference rebuilds it from)."""
    unet = randomize_(UNetModel(REFINER_UNET_CONFIG), seed)
    flat = {UNET_PREFIX + k: v.contiguous() for k, v in unet.state_dict().items()}
    flat.update({VAE_PREFIX + k: v for k, v in make_vae_sd(seed + 8).items()})
    flat.update(make_openclip_sd(REFINER_CLIP, width=CLIP_G_WIDTH, layers=CLIP_LAYERS, seed=seed + 2,
                                 projection=SDXL_POOLED_DIM))
    metadata = {**unet_metadata(REFINER_UNET_CONFIG), "nodegraph.family": "sdxl-refiner"}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_checkpoint(path, {"": flat}, metadata)
    return flat
