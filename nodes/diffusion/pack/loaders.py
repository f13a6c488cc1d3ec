"""Model loader nodes: checkpoint, VAE, ControlNet, LoRA.

Loaders are cached by the engine like any node (the key includes the file's
size and mtime through the fingerprint), so a second run re-uses the loaded
model, and nodes downstream must never modify what they receive.
"""

from __future__ import annotations

from nodegraph.context import NodeContext
from nodegraph.spec import Combo, Out, node
from nodes.shared.model_paths import choices_for

from . import estimates as est
from .common import load_error, model_file_fingerprint, resolve_model


def _header_checked_fingerprint(kind: str, input_name: str, refused: tuple[str, ...], noun: str):  # noqa: ANN202
    """Fingerprint hook of a single-file loader: the file's size/mtime fingerprint, after checking from
    its header (at validation, before any work) that it is not one of the ``refused`` kinds of
    :func:`..split_files.identify_file` -- a T5 file picked as a checkpoint fails naming the input,
    what the file is and where it belongs, instead of deep inside the loader."""
    file_fingerprint = model_file_fingerprint(kind, input_name)

    def fingerprint(values, settings):  # noqa: ANN001, ANN202
        from nodegraph.errors import NodeInputError

        from ..split_files import fix_for, identify_file

        path = resolve_model(settings, kind, str(values[input_name]), input_name)
        try:
            identity = identify_file(path)
        except Exception as exc:
            raise NodeInputError(input_name, str(exc), "re-download or re-copy the file; it is incomplete") from None
        if identity is not None and identity.kind in refused:
            raise NodeInputError(input_name, f"{values[input_name]!r} is {identity.description}, not {noun}",
                                 fix_for(identity))
        return file_fingerprint(values, settings)

    return fingerprint


_ckpt_fingerprint = _header_checked_fingerprint(
    "checkpoints", "ckpt_name", ("t5", "clip", "openclip", "flux", "sd3", "vae", "lora", "controlnet", "sd_unet",
                                 "zimage", "qwen3", "llm"),
    "a full checkpoint")


@node("diffusion.checkpoint_loader", category="loaders", display_name="Load Checkpoint",
      inputs=[Combo("ckpt_name", choices_for("checkpoints"),
                    tooltip="single-file checkpoint in the original SD layout (SD1.x, SD2.x, SDXL, our demos) "
                            "or an all-in-one FLUX or SD3 file"),
              Combo("prediction", ["auto", "eps", "v"], "auto",
                    tooltip="override the model's prediction type if its file is mislabelled")],
      outputs=[Out("MODEL", "MODEL"), Out("CLIP", "CLIP"), Out("VAE", "VAE")],
      fingerprint=_ckpt_fingerprint)
def checkpoint_loader(ctx: NodeContext, ckpt_name: str, prediction: str = "auto"):
    """Load UNet, text encoder(s) and VAE from one checkpoint file; architecture is read
    from tensor shapes, the rest from family rules and the file's metadata."""
    from ..checkpoint import load_checkpoint
    from .device_memory import home_device

    path = resolve_model(ctx.settings, "checkpoints", ckpt_name, "ckpt_name")
    try:
        ckpt = load_checkpoint(path, device=ctx.device, prediction=prediction, home=home_device(ctx))
    except Exception as exc:
        raise load_error("ckpt_name", exc) from exc
    if ckpt.clip is None or ckpt.vae is None:
        missing = [n for n, v in (("text encoder", ckpt.clip), ("VAE", ckpt.vae)) if v is None]
        ctx.log(f"checkpoint has no {' and '.join(missing)}; load them separately")
    return ckpt.model, ckpt.clip, ckpt.vae


_vae_fingerprint = _header_checked_fingerprint(
    "vae", "vae_name", ("t5", "clip", "openclip", "flux", "flux_checkpoint", "sd3", "sd3_checkpoint", "lora",
                        "controlnet", "sd_unet", "zimage", "qwen3", "llm"),
    "a VAE")


@node("diffusion.vae_loader", category="loaders", display_name="Load VAE",
      inputs=[Combo("vae_name", choices_for("vae"),
                    tooltip="a VAE file: SD's 4-channel VAEs, or FLUX's 16-channel ae.safetensors")],
      outputs=[Out("VAE", "VAE")], fingerprint=_vae_fingerprint, preflight=est.vae_file)
def vae_loader(ctx: NodeContext, vae_name: str):
    """Load a standalone VAE (a fixed SD1.5 or SDXL VAE, or FLUX's 16-channel ae); the latent scaling
    follows the VAE's kind (FLUX: 0.3611 / shift 0.1159)."""
    from ..checkpoint import load_vae_file

    path = resolve_model(ctx.settings, "vae", vae_name, "vae_name")
    try:
        return load_vae_file(path, device=ctx.device)
    except Exception as exc:
        raise load_error("vae_name", exc) from exc


def _controlnet_choices(settings):  # noqa: ANN001, ANN202
    from nodes.shared.model_paths import ModelPaths

    paths = ModelPaths.from_settings(settings)
    return paths.list("controlnet") + [n for n in paths.list("controlnet", folders=True)]


@node("diffusion.controlnet_loader", category="loaders", display_name="Load ControlNet",
      inputs=[Combo("control_net_name", _controlnet_choices,
                    tooltip="single-file ControlNet (original layout) or a diffusers folder")],
      outputs=[Out("CONTROL_NET", "CONTROL_NET")],
      fingerprint=model_file_fingerprint("controlnet", "control_net_name"))
def controlnet_loader(ctx: NodeContext, control_net_name: str):
    """Load a ControlNet."""
    from ..checkpoint import load_controlnet_file

    path = resolve_model(ctx.settings, "controlnet", control_net_name, "control_net_name")
    try:
        return load_controlnet_file(path, device=ctx.device)
    except Exception as exc:
        raise load_error("control_net_name", exc) from exc


NODES = [checkpoint_loader, vae_loader, controlnet_loader]
