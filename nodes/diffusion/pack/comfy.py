"""How the diffusion pack's nodes correspond to ComfyUI classes (registered with the pack).

Each row lists the ComfyUI inputs of one class *in ComfyUI's declaration
order* (the order of the UI format's positional ``widgets_values``) and the
outputs by ComfyUI slot.  Facts about ComfyUI (input names, widget order,
output order, defaults) come from its node definitions (``nodes.py``,
``comfy_extras/``).  Torch-free: importing a workflow never loads models.
"""

from __future__ import annotations

from nodegraph.comfy.mapping import ComfyMappings, L, NodeMap, Param, W
from nodegraph.comfy.result import ImportResult
from nodegraph.graph import Graph

from ..catalogue import COMFY_SAMPLER_VARIANTS

_CHECKPOINT = "diffusion.checkpoint_loader"
_EMPTY_LATENT = "diffusion.empty_latent"


def _sampler(name: str = "sampler_name") -> Param:
    """A sampler widget: ComfyUI's *_gpu variants import as ours, with a warning (noise device differs)."""
    return W(name, approx=COMFY_SAMPLER_VARIANTS)


def _tiled(comfy: str, ours: str, image_input: str, output: str) -> NodeMap:
    return NodeMap(comfy, ours,
                   (L(image_input), L("vae"), W("tile_size"), W("overlap"),
                    W("temporal_size", drop=True, comfy_default=64),
                    W("temporal_overlap", drop=True, comfy_default=8)),
                   (output,))


MAPS: tuple[NodeMap, ...] = (
    # -- loaders
    NodeMap("CheckpointLoaderSimple", _CHECKPOINT,
            (W("ckpt_name", kind="model:checkpoints"),), ("MODEL", "CLIP", "VAE")),
    NodeMap("VAELoader", "diffusion.vae_loader", (W("vae_name", kind="model:vae"),), ("VAE",)),
    NodeMap("LoraLoader", "diffusion.lora_loader",
            (L("model"), L("clip"), W("lora_name", kind="model:loras"), W("strength_model"), W("strength_clip")),
            ("MODEL", "CLIP")),
    NodeMap("LoraLoaderModelOnly", "diffusion.lora_loader_model_only",
            (L("model"), W("lora_name", kind="model:loras"), W("strength_model")), ("MODEL",)),
    NodeMap("ControlNetLoader", "diffusion.controlnet_loader",
            (W("control_net_name", kind="model:controlnet"),), ("CONTROL_NET",)),
    # -- conditioning
    NodeMap("CLIPTextEncode", "diffusion.text_encode", (W("text"), L("clip")), ("CONDITIONING",)),
    NodeMap("CLIPTextEncodeSDXL", "diffusion.text_encode_sdxl",
            (W("width"), W("height"), W("crop_w"), W("crop_h"), W("target_width"), W("target_height"), W("text_g"),
             L("clip"), W("text_l")), ("CONDITIONING",)),
    NodeMap("CLIPTextEncodeSDXLRefiner", "diffusion.text_encode_sdxl_refiner",
            (W("ascore"), W("width"), W("height"), W("text"), L("clip")), ("CONDITIONING",)),
    NodeMap("CLIPSetLastLayer", "diffusion.clip_set_last_layer", (L("clip"), W("stop_at_clip_layer")), ("CLIP",)),
    NodeMap("ControlNetApply", "diffusion.controlnet_apply",
            (L("conditioning"), L("control_net"), L("image"), W("strength")), ("CONDITIONING",)),
    NodeMap("ControlNetApplyAdvanced", "diffusion.controlnet_apply_advanced",
            (L("positive"), L("negative"), L("control_net"), L("image"), W("strength"), W("start_percent"),
             W("end_percent"), L("vae", drop=True)),
            ("positive", "negative")),
    NodeMap("ConditioningCombine", "diffusion.conditioning_combine",
            (L("conditioning_1"), L("conditioning_2")), ("CONDITIONING",)),
    NodeMap("ConditioningConcat", "diffusion.conditioning_concat",
            (L("conditioning_to"), L("conditioning_from")), ("CONDITIONING",)),
    NodeMap("ConditioningAverage", "diffusion.conditioning_average",
            (L("conditioning_to"), L("conditioning_from"), W("conditioning_to_strength")), ("CONDITIONING",)),
    NodeMap("ConditioningSetArea", "diffusion.conditioning_set_area",
            (L("conditioning"), W("width"), W("height"), W("x"), W("y"), W("strength")), ("CONDITIONING",)),
    NodeMap("ConditioningSetAreaPercentage", "diffusion.conditioning_set_area_percentage",
            (L("conditioning"), W("width"), W("height"), W("x"), W("y"), W("strength")), ("CONDITIONING",)),
    NodeMap("ConditioningSetAreaStrength", "diffusion.conditioning_set_area_strength",
            (L("conditioning"), W("strength")), ("CONDITIONING",)),
    NodeMap("ConditioningSetMask", "diffusion.conditioning_set_mask",
            (L("conditioning"), L("mask"), W("strength"), W("set_cond_area")), ("CONDITIONING",)),
    NodeMap("ConditioningSetTimestepRange", "diffusion.conditioning_set_timestep_range",
            (L("conditioning"), W("start"), W("end")), ("CONDITIONING",)),
    # -- latents
    NodeMap("EmptyLatentImage", _EMPTY_LATENT, (W("width"), W("height"), W("batch_size")), ("LATENT",)),
    NodeMap("LatentUpscale", "diffusion.latent_upscale",
            (L("samples"), W("upscale_method"), W("width"), W("height"), W("crop")), ("LATENT",)),
    NodeMap("LatentUpscaleBy", "diffusion.latent_upscale_by",
            (L("samples"), W("upscale_method"), W("scale_by")), ("LATENT",)),
    NodeMap("SetLatentNoiseMask", "diffusion.set_latent_noise_mask", (L("samples"), L("mask")), ("LATENT",)),
    NodeMap("VAEDecode", "diffusion.vae_decode", (L("samples"), L("vae")), ("IMAGE",)),
    NodeMap("VAEEncode", "diffusion.vae_encode", (L("pixels"), L("vae")), ("LATENT",)),
    _tiled("VAEDecodeTiled", "diffusion.vae_decode_tiled", "samples", "IMAGE"),
    _tiled("VAEEncodeTiled", "diffusion.vae_encode_tiled", "pixels", "LATENT"),
    NodeMap("VAEEncodeForInpaint", "diffusion.vae_encode_for_inpaint",
            (L("pixels"), L("vae"), L("mask"), W("grow_mask_by")), ("LATENT",)),
    NodeMap("InpaintModelConditioning", "diffusion.inpaint_model_conditioning",
            (L("positive"), L("negative"), L("vae"), L("pixels"), L("mask"), W("noise_mask")),
            ("positive", "negative", "latent")),
    NodeMap("InstructPixToPixConditioning", "diffusion.instruct_pix2pix_conditioning",
            (L("positive"), L("negative"), L("vae"), L("pixels")), ("positive", "negative", "latent")),
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
    NodeMap("SamplerCustomAdvanced", "diffusion.sampler_custom_advanced",
            (L("noise"), L("guider"), L("sampler"), L("sigmas"), L("latent_image")),
            ("output", "denoised_output")),
    # -- split-file loaders and FLUX
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
    NodeMap("CLIPTextEncodeFlux", "diffusion.clip_text_encode_flux",
            (L("clip"), W("clip_l"), W("t5xxl"), W("guidance")), ("CONDITIONING",)),
    NodeMap("FluxGuidance", "diffusion.flux_guidance", (L("conditioning"), W("guidance")), ("CONDITIONING",)),
    NodeMap("ConditioningZeroOut", "diffusion.conditioning_zero_out", (L("conditioning"),), ("CONDITIONING",)),
    NodeMap("EmptySD3LatentImage", "diffusion.empty_sd3_latent", (W("width"), W("height"), W("batch_size")),
            ("LATENT",)),
    NodeMap("BasicGuider", "diffusion.basic_guider", (L("model"), L("conditioning")), ("GUIDER",)),
    NodeMap("ModelSamplingFlux", "diffusion.model_sampling_flux",
            (L("model"), W("max_shift"), W("base_shift"), W("width"), W("height")), ("MODEL",)),
    # -- SD3 / SD3.5 (UNETLoader, CLIPLoader type "sd3", EmptySD3LatentImage and ConditioningZeroOut above)
    NodeMap("TripleCLIPLoader", "diffusion.triple_clip_loader",
            (W("clip_name1", kind="model:text_encoders"), W("clip_name2", kind="model:text_encoders"),
             W("clip_name3", kind="model:text_encoders")), ("CLIP",)),
    NodeMap("ModelSamplingSD3", "diffusion.model_sampling_sd3", (L("model"), W("shift")), ("MODEL",)),
    # -- ComfyUI-GGUF's loaders (city96): our loaders read .gguf files themselves (weights stay quantized);
    # listed after the core classes, so export writes UNETLoader / CLIPLoader / DualCLIPLoader / TripleCLIPLoader
    NodeMap("UnetLoaderGGUF", "diffusion.unet_loader", (W("unet_name", kind="model:diffusion_models"),), ("MODEL",)),
    NodeMap("CLIPLoaderGGUF", "diffusion.clip_loader",
            (W("clip_name", kind="model:text_encoders"), W("type")), ("CLIP",)),
    NodeMap("DualCLIPLoaderGGUF", "diffusion.dual_clip_loader",
            (W("clip_name1", kind="model:text_encoders"), W("clip_name2", kind="model:text_encoders"), W("type")),
            ("CLIP",)),
    NodeMap("TripleCLIPLoaderGGUF", "diffusion.triple_clip_loader",
            (W("clip_name1", kind="model:text_encoders"), W("clip_name2", kind="model:text_encoders"),
             W("clip_name3", kind="model:text_encoders")), ("CLIP",)),
    # -- Z-Image (UNETLoader, CLIPLoader type "lumina2", EmptySD3LatentImage and ConditioningZeroOut above)
    NodeMap("ModelSamplingAuraFlow", "diffusion.model_sampling_aura_flow", (L("model"), W("shift")), ("MODEL",)),
    # -- latent files (ComfyUI's .latent format and scale)
    NodeMap("SaveLatent", "diffusion.save_latent", (L("samples"), W("filename_prefix"))),
    NodeMap("LoadLatent", "diffusion.load_latent", (W("latent", kind="image"),), ("LATENT",)),
)


def connect_latent_vae(result: ImportResult) -> None:
    """Give imported empty latents the VAE of the checkpoint whose model samples them.

    ComfyUI's EmptyLatentImage always makes SD's 4-channel latents at 1/8 size.  Ours sizes the
    latent for the VAE it is given (optional input), which is what makes models with another VAE
    (our small demo models: 4x downscale) work.  The VAE to use is the one of the checkpoint
    whose MODEL denoises this latent: follow the latent downstream to the first nodes that take a
    model (a sampler, a guider), then that model upstream to its checkpoint loader.  With two
    checkpoints (a two-pass workflow) each latent gets its own; with one there is no doubt.  For
    SD models the result is the same 4-channel 1/8 latent ComfyUI makes.
    """
    graph = result.graph
    loaders = {n.id for n in graph if n.type == _CHECKPOINT}
    if not loaders:
        return
    for n in list(graph):
        if n.type == _EMPTY_LATENT and graph.link_into(n.id, "vae") is None:
            found = _checkpoint_for_latent(graph, n.id, loaders)
            if found is None and len(loaders) == 1:
                found = next(iter(loaders))
            if found is not None:
                graph.connect(found, "VAE", n.id, "vae")
            elif len(loaders) > 1:
                result.warnings.append(
                    f"node {n.id!r} (EmptyLatentImage): cannot tell which of the checkpoints {sorted(loaders)} "
                    "its latent is for; it is sized for SD (1/8, 4 channels)")


_MODEL_INPUTS = ("model", "guider")


def _checkpoint_for_latent(graph: Graph, latent_id: str, loaders: set[str]) -> str | None:
    """The checkpoint loader whose MODEL samples the latent made by ``latent_id`` (or None)."""
    seen = {latent_id}
    frontier = [latent_id]
    while frontier:  # breadth-first downstream, to the nearest nodes that take a model
        consumers: list[str] = []
        for nid in frontier:
            for lk in graph.links_from(nid):
                if lk.dst not in seen:
                    seen.add(lk.dst)
                    consumers.append(lk.dst)
        takers = [c for c in consumers if any(graph.link_into(c, i) is not None for i in _MODEL_INPUTS)]
        if takers:
            found = {_upstream_loader(graph, t, loaders) for t in takers} - {None}
            return found.pop() if len(found) == 1 else None
        frontier = consumers
    return None


def _upstream_loader(graph: Graph, nid: str, loaders: set[str]) -> str | None:
    """Follow a node's model (or guider) input upstream, through LoRAs, guiders and reroutes,
    to the checkpoint loader it comes from."""
    stack = [lk.src for i in _MODEL_INPUTS if (lk := graph.link_into(nid, i)) is not None]
    seen: set[str] = set()
    while stack:
        cur = stack.pop()
        if cur in loaders:
            return cur
        if cur in seen:
            continue
        seen.add(cur)
        for name in (*_MODEL_INPUTS, "input"):  # "input": through reroutes
            lk = graph.link_into(cur, name)
            if lk is not None:
                stack.append(lk.src)
    return None


COMFY = ComfyMappings(maps=MAPS, import_hooks=(connect_latent_vae,),
                      implicit_inputs=((_EMPTY_LATENT, "vae", "VAE"),))
