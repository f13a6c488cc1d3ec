"""Diffusion nodes, registered under the ``diffusion.*`` type ids.

Importing this package imports neither torch nor the model code: node
functions import them when they run, so ``nodegraph nodes`` and validation
stay instant.
"""

from __future__ import annotations

from nodegraph.registry import Registry

from . import (
    compose,
    conditioning,
    custom_sampling,
    flux,
    inpaint,
    latent,
    latent_files,
    loaders,
    lora,
    sampler,
    sd3,
    vae,
)
from .comfy import COMFY
from .zimage import NODES as ZIMAGE_NODES

NODES = [*loaders.NODES, *lora.NODES, *conditioning.NODES, *compose.NODES, *latent.NODES, *latent_files.NODES,
         *sampler.NODES, *vae.NODES, *custom_sampling.NODES, *flux.NODES, *sd3.NODES,
         *ZIMAGE_NODES, *inpaint.NODES]


def register(registry: Registry) -> None:
    registry.add_pack("diffusion", NODES, comfy=COMFY)


__all__ = ["NODES", "register"]
