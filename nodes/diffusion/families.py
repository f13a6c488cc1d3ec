"""Per-family facts a checkpoint's tensor shapes cannot tell.

Shapes give channels, depths, context width and SDXL's extra embedding
(see ``models/unet_config.py``).  They do not give the prediction type, the
VAE's latent scaling, the text encoder's activation or which hidden layer the
UNet was trained on.  Those come from, in order: the file's safetensors
metadata (``nodegraph.*`` keys, which our demo models carry), then the family
rules below, which describe the public Stable Diffusion releases.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .text.encode import SD1, SD2, SDXL_G, SDXL_L, EncoderSettings

META = "nodegraph."


@dataclass(frozen=True)
class FamilyRules:
    """Everything beyond shapes that a loader needs for one model family."""

    name: str
    prediction_type: str = "eps"
    vae_scaling_factor: float = 0.18215
    vae_shift_factor: float = 0.0
    clip_activation: str = "quick_gelu"
    encoder: EncoderSettings = SD1
    schedule: Mapping[str, Any] | None = None  # make_schedule kwargs; None = SD's
    default_size: int = 512
    default_steps: int = 20
    default_cfg: float = 7.0
    default_sampler: str = "euler"
    default_scheduler: str = "normal"
    description: str = ""


FAMILIES: dict[str, FamilyRules] = {
    "sd1": FamilyRules("sd1", description="Stable Diffusion 1.x"),
    # SD2.x ships as 512-base (eps) and 768-v (v-prediction); 768-v is the common
    # one.  Files can say otherwise in metadata, and the loader node has an override.
    "sd2": FamilyRules("sd2", prediction_type="v", clip_activation="gelu", encoder=SD2, default_size=768,
                       description="Stable Diffusion 2.x"),
    "sdxl": FamilyRules("sdxl", vae_scaling_factor=0.13025, encoder=SDXL_L, default_size=1024,
                        description="Stable Diffusion XL base"),
    # The refiner: one text encoder (bigG: penultimate layer, no final LN, pad 0; pooled from the last
    # layer), y = pooled ++ (height, width, crop, aesthetic score); SDXL's VAE.
    "sdxl-refiner": FamilyRules("sdxl-refiner", vae_scaling_factor=0.13025, clip_activation="gelu", encoder=SDXL_G,
                                default_size=1024, default_steps=25, description="Stable Diffusion XL refiner"),
    "custom": FamilyRules("custom", description="unrecognised architecture, SD1 conventions assumed"),
    # Flow-matching transformers (split files).  ``schedule`` names the model sampling:
    # "flux" = exp(mu) shift over 10,000 training sigmas (mu settable by ModelSamplingFlux),
    # "flow" = a fixed shift; see model_sampling_for().
    "flux-dev": FamilyRules("flux-dev", prediction_type="flow", vae_scaling_factor=0.3611, vae_shift_factor=0.1159,
                            clip_activation="quick_gelu", schedule={"kind": "flux", "mu": 1.15}, default_size=1024,
                            default_steps=20, default_cfg=1.0, default_sampler="euler", default_scheduler="simple",
                            description="FLUX.1 dev (guidance-distilled flow transformer)"),
    "flux-schnell": FamilyRules("flux-schnell", prediction_type="flow", vae_scaling_factor=0.3611,
                                vae_shift_factor=0.1159, clip_activation="quick_gelu",
                                schedule={"kind": "flow", "shift": 1.0, "multiplier": 1.0}, default_size=1024,
                                default_steps=4, default_cfg=1.0, default_sampler="euler",
                                default_scheduler="simple", description="FLUX.1 schnell (timestep-distilled)"),
    # SD3 / SD3.5: fixed shift 3.0 (ModelSamplingSD3), SD3's own 16-channel VAE scaling, CFG with a negative.
    "sd3": FamilyRules("sd3", prediction_type="flow", vae_scaling_factor=1.5305, vae_shift_factor=0.0609,
                       clip_activation="quick_gelu", schedule={"kind": "flow", "shift": 3.0, "multiplier": 1.0},
                       default_size=1024, default_steps=28, default_cfg=4.5, default_sampler="euler",
                       default_scheduler="sgm_uniform", description="Stable Diffusion 3 / 3.5 (MMDiT)"),
    # Z-Image / Z-Image-Turbo: fixed shift 3.0 with multiplier 1 (ComfyUI's ZImage model sampling, which
    # ModelSamplingAuraFlow sets), FLUX's VAE; the Turbo defaults of the official workflow (cfg 1, res_multistep).
    "zimage": FamilyRules("zimage", prediction_type="flow", vae_scaling_factor=0.3611, vae_shift_factor=0.1159,
                          schedule={"kind": "flow", "shift": 3.0, "multiplier": 1.0}, default_size=1024,
                          default_steps=9, default_cfg=1.0, default_sampler="res_multistep",
                          default_scheduler="simple", description="Z-Image (single-stream DiT, Qwen3-4B text)"),
}

SDXL_G_SETTINGS = SDXL_G


def _meta(metadata: Mapping[str, str], key: str) -> str | None:
    value = metadata.get(META + key)
    return value if value not in (None, "") else None


def rules_for(family: str, metadata: Mapping[str, str] | None = None,
              prediction_override: str | None = None) -> FamilyRules:
    """Family rules with metadata overrides applied (metadata wins over family defaults,
    an explicit user choice wins over both)."""
    metadata = metadata or {}
    declared = _meta(metadata, "family")
    # A file may declare a known family (its rules then apply) or its own name.
    rules = FAMILIES.get(declared or family) or FAMILIES.get(family, FAMILIES["custom"])
    name = declared or rules.name
    changes: dict[str, Any] = {"name": name}
    if (p := _meta(metadata, "prediction_type")) or (p := metadata.get("modelspec.prediction_type")):
        changes["prediction_type"] = {"epsilon": "eps", "v_prediction": "v"}.get(p, p)
    if v := _meta(metadata, "vae.scaling_factor"):
        changes["vae_scaling_factor"] = float(v)
    if v := _meta(metadata, "vae.shift_factor"):
        changes["vae_shift_factor"] = float(v)
    if v := _meta(metadata, "clip.activation"):
        changes["clip_activation"] = v
    enc = rules.encoder
    if v := _meta(metadata, "clip.skip"):
        enc = replace(enc, clip_skip=int(v))
    if v := _meta(metadata, "clip.final_norm"):
        enc = replace(enc, final_norm=v.lower() == "true")
    if v := _meta(metadata, "clip.pad"):
        enc = replace(enc, pad_id=None if v == "eos" else int(v))
    changes["encoder"] = enc
    if v := _meta(metadata, "schedule"):
        changes["schedule"] = json.loads(v)
    for key, conv in (("default_size", int), ("default_steps", int), ("default_cfg", float),
                      ("default_sampler", str), ("default_scheduler", str), ("description", str)):
        if v := _meta(metadata, key):
            changes[key] = conv(v)
    if prediction_override and prediction_override != "auto":
        changes["prediction_type"] = prediction_override
    result = replace(rules, **changes)
    if result.prediction_type not in ("eps", "v", "sample", "flow"):
        raise ValueError(f"unknown prediction type {result.prediction_type!r} in metadata")
    return result


def model_sampling_for(rules: FamilyRules) -> Any:
    """The model sampling object (noise schedule) a family's rules describe: the DDPM
    schedule for UNets, a flow-matching schedule for ``{"kind": "flux" | "flow", ...}``."""
    from .sampling.model_sampling import FlowSchedule, flux_schedule, make_schedule

    params = dict(rules.schedule or {})
    kind = params.pop("kind", "ddpm")
    if kind == "flux":
        return flux_schedule(float(params.get("mu", 1.15)))
    if kind == "flow":
        return FlowSchedule(shift=float(params.get("shift", 1.0)), multiplier=float(params.get("multiplier", 1.0)),
                            table_size=int(params.get("table_size", 1000)))
    if kind != "ddpm":
        raise ValueError(f"unknown schedule kind {kind!r} in the model's rules")
    return make_schedule(**params)
