"""The table: ComfyUI ``class_type`` <-> nodegraph node type, input by input.

Each :class:`NodeMap` lists the ComfyUI inputs of one class *in ComfyUI's
declaration order*, because that order is what the UI format's positional
``widgets_values`` follow (link-only inputs have no position; a seed widget is
followed by the frontend-only "control_after_generate" value).  Outputs are
listed by ComfyUI slot index, which is how both ComfyUI formats address them.

Facts about ComfyUI (input names, widget order, output order, defaults) were
taken from its node definitions (``nodes.py``, ``comfy_extras/``); nothing
here imports ComfyUI, torch or our node packs, so importing a workflow stays
instant and works without the packs installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

#: Values of ComfyUI's frontend-only "control_after_generate" widget.
SEED_CONTROLS = frozenset({"fixed", "increment", "decrement", "randomize"})

# Sampler variants that differ from ours only in the device their noise is drawn on.
_GPU_SAMPLERS = MappingProxyType({"dpmpp_sde_gpu": "dpmpp_sde", "dpmpp_2m_sde_gpu": "dpmpp_2m_sde"})
# ComfyUI's "nearest-exact" is what our image ops call "nearest" (torch's nearest-exact).
_IMAGE_METHODS = MappingProxyType({"nearest-exact": "nearest"})


@dataclass(frozen=True)
class Param:
    """One ComfyUI input of a mapped class.

    ``ours`` is our input name (default: the same); ``drop`` marks a ComfyUI
    input we have no equivalent for (its value is ignored on import and
    ``comfy_default`` is written on export when ComfyUI requires it).
    ``values`` renames choice values exactly (both directions); ``approx``
    renames them one way with a warning, for near-equivalents.  ``kind`` is
    "model:<folder>" or "image" for file names that need path normalising.
    """

    comfy: str
    widget: bool = True
    ours: str | None = None
    seed: bool = False
    values: Mapping[str, str] = field(default_factory=dict)
    approx: Mapping[str, str] = field(default_factory=dict)
    kind: str | None = None
    drop: bool = False
    comfy_default: Any = None

    @property
    def name(self) -> str:
        """Our input name."""
        return self.ours or self.comfy

    @property
    def model_folder(self) -> str | None:
        return self.kind.split(":", 1)[1] if self.kind and self.kind.startswith("model:") else None

    def to_ours(self, value: Any) -> tuple[Any, str | None]:
        """(our value, warning or None) for a ComfyUI widget value."""
        if isinstance(value, str):
            if value in self.values:
                return self.values[value], None
            if value in self.approx:
                new = self.approx[value]
                return new, f"{self.comfy} {value!r} has no exact equivalent; using {new!r}"
            if self.kind is not None:
                return normalise_file_name(value, image=self.kind == "image")
        return value, None

    def to_comfy(self, value: Any) -> Any:
        for theirs, ours in self.values.items():
            if value == ours:
                return theirs
        return value


def normalise_file_name(name: str, *, image: bool = False) -> tuple[str, str | None]:
    """ComfyUI names files relative to their folder with the OS separator (``sub\\x.safetensors``
    on Windows); ours are ``/``-separated.  Image names may carry an ``[input]`` annotation."""
    out = name.replace("\\", "/")
    warning = None
    if image:
        for tag in (" [input]", " [output]", " [temp]"):
            if out.endswith(tag):
                out = out[: -len(tag)]
                if tag != " [input]":
                    folder = tag.strip(" []")
                    warning = f"image {name!r} refers to ComfyUI's {folder} folder; looked up in the input folder"
    return out, warning


def L(comfy: str, ours: str | None = None, *, drop: bool = False) -> Param:  # noqa: N802 - table shorthand
    """A link-only input (MODEL, IMAGE…)."""
    return Param(comfy, widget=False, ours=ours, drop=drop)


def W(comfy: str, ours: str | None = None, **kw: Any) -> Param:  # noqa: N802 - table shorthand
    """A widget input (has a position in ``widgets_values``)."""
    return Param(comfy, widget=True, ours=ours, **kw)


@dataclass(frozen=True)
class NodeMap:
    """How one ComfyUI class maps onto one of our node types."""

    comfy: str
    ours: str
    params: tuple[Param, ...] = ()
    outputs: tuple[str, ...] = ()  # our output names, by ComfyUI output slot
    ui_widgets: tuple[str, ...] = ()  # frontend-only widgets after the real ones (LoadImage's upload button)

    def param(self, comfy_name: str) -> Param | None:
        for p in self.params:
            if p.comfy == comfy_name:
                return p
        return None

    def param_for_ours(self, our_name: str) -> Param | None:
        for p in self.params:
            if not p.drop and p.name == our_name:
                return p
        return None

    @property
    def widgets(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.widget)


def _sampler(name: str = "sampler_name") -> Param:
    return W(name, approx=_GPU_SAMPLERS)


_TABLE: tuple[NodeMap, ...] = (
    # -- loaders
    NodeMap("CheckpointLoaderSimple", "diffusion.checkpoint_loader",
            (W("ckpt_name", kind="model:checkpoints"),), ("MODEL", "CLIP", "VAE")),
    NodeMap("VAELoader", "diffusion.vae_loader", (W("vae_name", kind="model:vae"),), ("VAE",)),
    NodeMap("LoraLoader", "diffusion.lora_loader",
            (L("model"), L("clip"), W("lora_name", kind="model:loras"), W("strength_model"), W("strength_clip")),
            ("MODEL", "CLIP")),
    NodeMap("LoraLoaderModelOnly", "diffusion.lora_loader_model_only",
            (L("model"), W("lora_name", kind="model:loras"), W("strength_model")), ("MODEL",)),
    NodeMap("ControlNetLoader", "diffusion.controlnet_loader",
            (W("control_net_name", kind="model:controlnet"),), ("CONTROL_NET",)),
    NodeMap("UpscaleModelLoader", "upscale.load_model",
            (W("model_name", kind="model:upscale_models"),), ("UPSCALE_MODEL",)),
    # -- split-file loaders (FLUX)
    NodeMap("UNETLoader", "diffusion.unet_loader",
            (W("unet_name", kind="model:diffusion_models"),
             W("weight_dtype", approx={"fp8_e4m3fn_fast": "fp8_e4m3fn"})), ("MODEL",)),
    NodeMap("CLIPLoader", "diffusion.clip_loader",
            (W("clip_name", kind="model:text_encoders"), W("type"), W("device", drop=True, comfy_default="default")),
            ("CLIP",)),
    NodeMap("DualCLIPLoader", "diffusion.dual_clip_loader",
            (W("clip_name1", kind="model:text_encoders"), W("clip_name2", kind="model:text_encoders"), W("type"),
             W("device", drop=True, comfy_default="default")),
            ("CLIP",)),
    # -- conditioning
    NodeMap("CLIPTextEncode", "diffusion.text_encode", (W("text"), L("clip")), ("CONDITIONING",)),
    NodeMap("CLIPSetLastLayer", "diffusion.clip_set_last_layer", (L("clip"), W("stop_at_clip_layer")), ("CLIP",)),
    NodeMap("CLIPTextEncodeFlux", "diffusion.clip_text_encode_flux",
            (L("clip"), W("clip_l"), W("t5xxl"), W("guidance")), ("CONDITIONING",)),
    NodeMap("FluxGuidance", "diffusion.flux_guidance", (L("conditioning"), W("guidance")), ("CONDITIONING",)),
    NodeMap("ConditioningZeroOut", "diffusion.conditioning_zero_out", (L("conditioning"),), ("CONDITIONING",)),
    NodeMap("ControlNetApply", "diffusion.controlnet_apply",
            (L("conditioning"), L("control_net"), L("image"), W("strength")), ("CONDITIONING",)),
    NodeMap("ControlNetApplyAdvanced", "diffusion.controlnet_apply_advanced",
            (L("positive"), L("negative"), L("control_net"), L("image"), W("strength"), W("start_percent"),
             W("end_percent"), L("vae", drop=True)),
            ("positive", "negative")),
    # -- latents
    NodeMap("EmptyLatentImage", "diffusion.empty_latent", (W("width"), W("height"), W("batch_size")), ("LATENT",)),
    NodeMap("EmptySD3LatentImage", "diffusion.empty_sd3_latent", (W("width"), W("height"), W("batch_size")),
            ("LATENT",)),
    NodeMap("LatentUpscale", "diffusion.latent_upscale",
            (L("samples"), W("upscale_method"), W("width"), W("height"), W("crop")), ("LATENT",)),
    NodeMap("LatentUpscaleBy", "diffusion.latent_upscale_by",
            (L("samples"), W("upscale_method"), W("scale_by")), ("LATENT",)),
    NodeMap("SetLatentNoiseMask", "diffusion.set_latent_noise_mask", (L("samples"), L("mask")), ("LATENT",)),
    NodeMap("VAEDecode", "diffusion.vae_decode", (L("samples"), L("vae")), ("IMAGE",)),
    NodeMap("VAEEncode", "diffusion.vae_encode", (L("pixels"), L("vae")), ("LATENT",)),
    NodeMap("VAEDecodeTiled", "diffusion.vae_decode_tiled",
            (L("samples"), L("vae"), W("tile_size"), W("overlap"),
             W("temporal_size", drop=True, comfy_default=64), W("temporal_overlap", drop=True, comfy_default=8)),
            ("IMAGE",)),
    NodeMap("VAEEncodeTiled", "diffusion.vae_encode_tiled",
            (L("pixels"), L("vae"), W("tile_size"), W("overlap"),
             W("temporal_size", drop=True, comfy_default=64), W("temporal_overlap", drop=True, comfy_default=8)),
            ("LATENT",)),
    NodeMap("VAEEncodeForInpaint", "diffusion.vae_encode_for_inpaint",
            (L("pixels"), L("vae"), L("mask"), W("grow_mask_by")), ("LATENT",)),
    # -- sampling
    NodeMap("KSampler", "diffusion.ksampler",
            (L("model"), W("seed", seed=True), W("steps"), W("cfg"), _sampler(), W("scheduler"),
             L("positive"), L("negative"), L("latent_image"), W("denoise")),
            ("LATENT",)),
    NodeMap("KSamplerAdvanced", "diffusion.ksampler_advanced",
            (L("model"), W("add_noise"), W("noise_seed", seed=True), W("steps"), W("cfg"), _sampler(),
             W("scheduler"), L("positive"), L("negative"), L("latent_image"), W("start_at_step"),
             W("end_at_step"), W("return_with_leftover_noise")),
            ("LATENT",)),
    NodeMap("RandomNoise", "diffusion.random_noise", (W("noise_seed", seed=True),), ("NOISE",)),
    NodeMap("DisableNoise", "diffusion.disable_noise", (), ("NOISE",)),
    NodeMap("KSamplerSelect", "diffusion.sampler_select", (_sampler(),), ("SAMPLER",)),
    NodeMap("BasicScheduler", "diffusion.basic_scheduler",
            (L("model"), W("scheduler"), W("steps"), W("denoise")), ("SIGMAS",)),
    NodeMap("CFGGuider", "diffusion.cfg_guider",
            (L("model"), L("positive"), L("negative"), W("cfg")), ("GUIDER",)),
    NodeMap("BasicGuider", "diffusion.basic_guider", (L("model"), L("conditioning")), ("GUIDER",)),
    NodeMap("ModelSamplingFlux", "diffusion.model_sampling_flux",
            (L("model"), W("max_shift"), W("base_shift"), W("width"), W("height")), ("MODEL",)),
    NodeMap("SamplerCustomAdvanced", "diffusion.sampler_custom_advanced",
            (L("noise"), L("guider"), L("sampler"), L("sigmas"), L("latent_image")),
            ("output", "denoised_output")),
    # -- images
    NodeMap("LoadImage", "image.load", (W("image", kind="image"),), ("IMAGE", "MASK"), ui_widgets=("upload",)),
    NodeMap("SaveImage", "image.save", (L("images"), W("filename_prefix"))),
    NodeMap("PreviewImage", "image.preview", (L("images"),)),
    NodeMap("ImageScale", "image.scale",
            (L("image"), W("upscale_method", "method", values=_IMAGE_METHODS), W("width"), W("height"),
             W("crop")),
            ("IMAGE",)),
    NodeMap("ImageScaleBy", "image.scale_by",
            (L("image"), W("upscale_method", "method", values=_IMAGE_METHODS), W("scale_by", "factor")),
            ("IMAGE",)),
    NodeMap("ImagePadForOutpaint", "image.pad_for_outpaint",
            (L("image"), W("left"), W("top"), W("right"), W("bottom"), W("feathering")), ("IMAGE", "MASK")),
    NodeMap("ImageUpscaleWithModel", "upscale.image_with_model", (L("upscale_model"), L("image")), ("IMAGE",)),
    NodeMap("ImageCrop", "image.crop", (L("image"), W("width"), W("height"), W("x"), W("y")), ("IMAGE",)),
    NodeMap("ImageInvert", "image.invert", (L("image"),), ("IMAGE",)),
    NodeMap("ImageBatch", "image.batch", (L("image1"), L("image2")), ("IMAGE",)),
    NodeMap("ImageToMask", "image.to_mask", (L("image"), W("channel")), ("MASK",)),
    NodeMap("MaskToImage", "image.mask_to_image", (L("mask"),), ("IMAGE",)),
    NodeMap("InvertMask", "image.invert_mask", (L("mask"),), ("MASK",)),
    NodeMap("GrowMask", "image.grow_mask", (L("mask"), W("expand"), W("tapered_corners")), ("MASK",)),
    # -- primitives (ComfyUI's backend primitive nodes; the frontend-only PrimitiveNode is folded away)
    NodeMap("PrimitiveInt", "primitives.int", (W("value", seed=True),), ("INT",)),
    NodeMap("PrimitiveFloat", "primitives.float", (W("value"),), ("FLOAT",)),
    NodeMap("PrimitiveString", "primitives.string", (W("value"),), ("STRING",)),
    NodeMap("PrimitiveStringMultiline", "primitives.string", (W("value"),), ("STRING",)),
    NodeMap("PrimitiveBoolean", "primitives.bool", (W("value"),), ("BOOLEAN",)),
)

#: ComfyUI class_type -> mapping.
BY_COMFY: Mapping[str, NodeMap] = MappingProxyType({m.comfy: m for m in _TABLE})
#: Our node type -> mapping used for export (the first entry wins when several ComfyUI classes share it).
BY_OURS: Mapping[str, NodeMap] = MappingProxyType({m.ours: m for m in reversed(_TABLE)})

REROUTE_TYPE = "primitives.reroute"
PLACEHOLDER_PREFIX = "comfy:"
#: Frontend-only ComfyUI node types that never reach its backend.
FRONTEND_ONLY = frozenset({"PrimitiveNode", "Reroute", "Note", "MarkdownNote"})


def placeholder_type(class_type: str) -> str:
    """The node type of a kept-but-unmapped ComfyUI node.  No pack registers it, so validation
    fails with ``unknown_type`` naming the ComfyUI class -- the user sees exactly what is missing."""
    return PLACEHOLDER_PREFIX + class_type


def mapping_for(class_type: str) -> NodeMap | None:
    return BY_COMFY.get(class_type)


__all__ = ["BY_COMFY", "BY_OURS", "FRONTEND_ONLY", "NodeMap", "PLACEHOLDER_PREFIX", "Param", "REROUTE_TYPE",
           "SEED_CONTROLS", "mapping_for", "normalise_file_name", "placeholder_type"]
