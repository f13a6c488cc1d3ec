"""Complete tiny single-file checkpoints (UNet + text encoder(s) + VAE) and the txt2img graph.

Three checkpoints keep the structural traits of the public releases, in their
original key layouts, with random weights and tiny widths:

* ``sd1``: UNet with conv proj_in/out and a fixed head count; CLIP-L in HF naming
  under ``cond_stage_model.transformer.`` (quick_gelu, last layer, EOS padding,
  with the old ``position_ids`` buffer); eps-prediction.
* ``sd2``: UNet with linear projections and fixed head width; OpenCLIP under
  ``cond_stage_model.model.`` (gelu, penultimate layer + final LN, pad id 0);
  v-prediction.
* ``sdxl``: UNet with linear projections, depths [0, 2, 3] and ``label_emb``
  (pooled text ++ size features); CLIP-L under ``conditioner.embedders.0.transformer.``
  ++ OpenCLIP bigG (2 heads, text projection) under ``conditioner.embedders.1.model.``;
  eps-prediction.

Each carries a tiny VAE under ``first_stage_model.`` (ch 32, ch_mult (1, 2, 2):
4x downscale, so the 48x32 test images are 12x8 latents).  Tiny shapes match no real
family, so the files say what shapes cannot: ``nodegraph.family`` for SD2
(v-prediction, OpenCLIP conventions) and SDXL (VAE scaling 0.13025), and the
UNet head layout.  The SD1-like file declares nothing on purpose: an
unrecognised architecture must fall back to SD1 conventions.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from nodegraph import Executor, Graph, Registry
from nodes.diffusion.models.unet import UNET_PREFIX, UNetModel
from nodes.diffusion.models.unet_config import UNetConfig
from nodes.diffusion.models.vae import AutoencoderKL, VAEConfig
from tests.diffusion.ldm_fixtures import SDXL_POOLED_DIM, randomize_, tiny_unet_config, unet_metadata
from tests.diffusion.ldm_fixtures import write_checkpoint as _write_flat
from tests.diffusion.text_fixtures import make_hf_clip_sd, make_openclip_sd

VAE_PREFIX = "first_stage_model."
SD1_CLIP = "cond_stage_model.transformer."
SD2_CLIP = "cond_stage_model.model."
SDXL_CLIP_L = "conditioner.embedders.0.transformer."
SDXL_CLIP_G = "conditioner.embedders.1.model."

KINDS = ("sd1", "sd2", "sdxl")
VAE_CONFIG = VAEConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, z_channels=4, embed_dim=4)
CLIP_LAYERS = 3
CLIP_L_WIDTH = 64  # 1 head of 64, like every SD text encoder's head width
CLIP_G_WIDTH = 128  # 2 heads: the head count must come from the width (bigG: 1280 / 64 = 20)
SD2_PROJECTION = 64
SCALING = {"sd1": 0.18215, "sd2": 0.18215, "sdxl": 0.13025}
PREDICTION = {"sd1": "eps", "sd2": "v", "sdxl": "eps"}
# Non-square, so a swapped (height, width) anywhere (SDXL size conditioning, latent shape) shows.
WIDTH, HEIGHT = 48, 32


@dataclass(frozen=True)
class TinyCheckpoint:
    """One written checkpoint and what a reference implementation needs to rebuild it."""

    kind: str
    path: Path
    unet_config: UNetConfig
    tensors: dict[str, torch.Tensor]  # the flat file contents
    metadata: dict[str, str]

    @property
    def name(self) -> str:
        """The name the checkpoint loader's ``ckpt_name`` input takes."""
        return self.path.name

    @property
    def prediction_type(self) -> str:
        return PREDICTION[self.kind]

    @property
    def scaling_factor(self) -> float:
        return SCALING[self.kind]

    def component(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors under ``prefix``, prefix kept (what diffusers' converters take)."""
        return {k: v for k, v in self.tensors.items() if k.startswith(prefix)}


def make_vae_sd(seed: int = 7) -> dict[str, torch.Tensor]:
    """Random tiny VAE in the LDM layout (bare keys): fan-in scaled weights, norm scales
    near 1, small biases.  Decoded images then stay mostly inside [-1, 1] (the parity
    test checks it), which matters because clamped pixels compare equal whatever the
    latents were."""
    gen = torch.Generator().manual_seed(seed)
    model = AutoencoderKL(VAE_CONFIG)
    sd = {}
    for k, v in model.state_dict().items():
        noise = torch.randn(v.shape, generator=gen)
        if v.ndim >= 2:
            v = noise / math.sqrt(v[0].numel())
        elif k.endswith("weight"):
            v = 1.0 + 0.1 * noise
        else:
            v = 0.05 * noise
        sd[k] = v.contiguous()
    return sd


def unet_config_for(kind: str) -> UNetConfig:
    """The tiny UNet of ``kind`` with its cross-attention width set to the text encoders' output."""
    width = {"sd1": CLIP_L_WIDTH, "sd2": CLIP_L_WIDTH, "sdxl": CLIP_L_WIDTH + CLIP_G_WIDTH}[kind]
    return dataclasses.replace(tiny_unet_config(kind), context_dim=width)


def build_checkpoint(kind: str, seed: int = 0, in_channels: int = 4,
                     ) -> tuple[UNetConfig, dict[str, torch.Tensor], dict[str, str]]:
    """(UNet config, flat original-layout tensors, safetensors metadata) of a tiny ``kind`` model
    (``in_channels`` 9 = an inpainting UNet: latent + mask + masked-image latent)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    cfg = dataclasses.replace(unet_config_for(kind), in_channels=in_channels)
    unet = randomize_(UNetModel(cfg), seed)
    flat: dict[str, torch.Tensor] = {UNET_PREFIX + k: v.contiguous() for k, v in unet.state_dict().items()}
    flat.update({VAE_PREFIX + k: v for k, v in make_vae_sd(seed + 7).items()})
    metadata = dict(unet_metadata(cfg))
    if kind == "sd1":
        # Old SD1 files carry the position_ids buffer; loaders must ignore it.
        flat.update(make_hf_clip_sd(SD1_CLIP, width=CLIP_L_WIDTH, layers=CLIP_LAYERS, seed=seed + 1,
                                    position_ids=True))
    elif kind == "sd2":
        flat.update(make_openclip_sd(SD2_CLIP, width=CLIP_L_WIDTH, layers=CLIP_LAYERS, seed=seed + 2,
                                     projection=SD2_PROJECTION))
        metadata["nodegraph.family"] = "sd2"
    else:
        flat.update(make_hf_clip_sd(SDXL_CLIP_L, width=CLIP_L_WIDTH, layers=CLIP_LAYERS, seed=seed + 3))
        flat.update(make_openclip_sd(SDXL_CLIP_G, width=CLIP_G_WIDTH, layers=CLIP_LAYERS, seed=seed + 4,
                                     projection=SDXL_POOLED_DIM))
        metadata["nodegraph.family"] = "sdxl"
    return cfg, flat, metadata


def write_tiny_checkpoint(models_dir: Path, kind: str, *, name: str | None = None, seed: int = 0,
                          drop_keys: tuple[str, ...] = (), dtype: torch.dtype | None = None,
                          in_channels: int = 4) -> TinyCheckpoint:
    """Write ``<models_dir>/checkpoints/<name>`` (default ``tiny_<kind>.safetensors``).

    ``drop_keys`` removes tensors (full keys) to make a broken file; ``dtype`` stores the
    floating-point tensors in that dtype (e.g. fp16, as most published checkpoints are)."""
    cfg, flat, metadata = build_checkpoint(kind, seed, in_channels)
    for key in drop_keys:
        del flat[key]
    if dtype is not None:
        flat = {k: v.to(dtype) if v.is_floating_point() else v for k, v in flat.items()}
    folder = Path(models_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or f"tiny_{kind}.safetensors")
    _write_flat(path, {"": flat}, metadata)
    return TinyCheckpoint(kind, path, cfg, flat, metadata)


# ----------------------------------------------------------------------------- engine helpers


def make_registry() -> Registry:
    """A registry holding only the diffusion pack (no dependence on what else is installed)."""
    from nodes.diffusion.pack import register

    registry = Registry()
    registry.load_pack(register)
    return registry


def make_executor(models_dir: Path, output_dir: Path, registry: Registry | None = None) -> Executor:
    """A CPU executor that finds models only in ``models_dir`` (the demo models stay out)."""
    return Executor(registry or make_registry(), device="cpu", output_dir=output_dir,
                    settings={"models_dir": str(models_dir), "include_demo_models": False})


def txt2img_graph(ckpt_name: str, *, prompt: str = "a red fox in the snow, oil painting",
                  negative: str = "", seed: int = 42, steps: int = 4, cfg: float = 5.0,
                  sampler: str = "euler", scheduler: str = "normal", width: int = WIDTH, height: int = HEIGHT,
                  batch_size: int = 1) -> Graph:
    """checkpoint_loader -> text_encode x2 -> empty_latent (sized by the VAE) -> ksampler -> vae_decode.

    Node ids: ``ckpt``, ``positive``, ``negative``, ``latent``, ``sampler``, ``decode``."""
    g = Graph()
    g.add_node("diffusion.checkpoint_loader", {"ckpt_name": ckpt_name, "prediction": "auto"}, id="ckpt")
    g.add_node("diffusion.text_encode", {"text": prompt}, id="positive")
    g.add_node("diffusion.text_encode", {"text": negative}, id="negative")
    g.add_node("diffusion.empty_latent", {"width": width, "height": height, "batch_size": batch_size}, id="latent")
    g.add_node("diffusion.ksampler", {"seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler,
                                      "scheduler": scheduler, "denoise": 1.0}, id="sampler")
    g.add_node("diffusion.vae_decode", {}, id="decode")
    g.connect("ckpt", "CLIP", "positive", "clip")
    g.connect("ckpt", "CLIP", "negative", "clip")
    g.connect("ckpt", "VAE", "latent", "vae")
    g.connect("ckpt", "MODEL", "sampler", "model")
    g.connect("positive", "CONDITIONING", "sampler", "positive")
    g.connect("negative", "CONDITIONING", "sampler", "negative")
    g.connect("latent", "LATENT", "sampler", "latent_image")
    g.connect("sampler", "LATENT", "decode", "samples")
    g.connect("ckpt", "VAE", "decode", "vae")
    return g
