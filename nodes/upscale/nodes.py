"""Upscale node specs (``upscale.*``).  Torch-free at import: node functions import
:mod:`.model` (torch, spandrel) only when they run."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nodegraph.context import NodeContext
from nodegraph.errors import NodeInputError
from nodegraph.spec import Combo, In, Int, Out, node
from nodes.shared.model_paths import ModelNotFound, ModelPaths, choices_for

KIND = "upscale_models"


def resolve_upscale_model(settings: Mapping[str, Any], name: str) -> Path:
    """Path of an upscale model file, or an error on ``model_name`` listing the folders searched."""
    try:
        return ModelPaths.from_settings(settings).resolve(KIND, name)
    except ModelNotFound as exc:
        raise NodeInputError("model_name", f"upscale model {name!r} not found",
                             f"put it in one of: {', '.join(str(d) for d in exc.searched)}") from None


def _model_fingerprint(values: Mapping[str, Any], settings: Mapping[str, Any]) -> tuple[str, int, int]:
    path = resolve_upscale_model(settings, str(values["model_name"]))
    try:
        st = path.stat()
    except OSError as exc:
        raise NodeInputError("model_name", f"cannot read {path}: {exc.strerror or exc}") from None
    return str(path.resolve()), st.st_size, st.st_mtime_ns


@node("upscale.load_model", category="loaders", display_name="Load Upscale Model",
      inputs=[Combo("model_name", choices_for(KIND),
                    tooltip="ESRGAN, Real-ESRGAN (Compact), SwinIR, HAT, DAT... (.safetensors or .pth)")],
      outputs=[Out("UPSCALE_MODEL", "UPSCALE_MODEL")], fingerprint=_model_fingerprint)
def load_upscale_model(ctx: NodeContext, model_name: str) -> Any:
    """Load a super-resolution model; its architecture and scale are detected from the weights.
    Pickle files are read with torch's weights-only loader; TorchScript is refused."""
    from .model import UpscaleModelError
    from .model import load_upscale_model as load

    path = resolve_upscale_model(ctx.settings, model_name)
    try:
        model = load(path, device=ctx.device, dtype=ctx.device_policy.compute_dtype)
    except UpscaleModelError as exc:
        raise NodeInputError("model_name", str(exc), "use an image super-resolution model file") from None
    ctx.log(f"{model_name}: {model.architecture} x{model.scale} on {model.device} ({model.dtype})")
    return model


@node("upscale.image_with_model", category="image/upscaling", display_name="Upscale Image (using Model)",
      inputs=[In("upscale_model", "UPSCALE_MODEL"), In("image", "IMAGE"),
              Int("tile_size", 512, min=32, max=4096, step=32,
                  tooltip="input pixels per tile; smaller uses less memory (halved automatically on OOM)"),
              Int("overlap", 32, min=0, max=1024, step=4,
                  tooltip="pixels shared by neighbouring tiles, blended so no seams show")],
      outputs=[Out("IMAGE", "IMAGE")])
def upscale_image_with_model(ctx: NodeContext, upscale_model: Any, image: Any, tile_size: int,
                             overlap: int) -> Any:
    """Upscale with a super-resolution model, tile by tile so any image size fits in memory."""
    if overlap >= tile_size:
        raise NodeInputError("overlap", f"overlap ({overlap}) must be smaller than tile_size ({tile_size})",
                             f"use an overlap below {tile_size}, e.g. {tile_size // 8}")

    def retried(new_tile: int, exc: BaseException) -> None:
        ctx.log(f"out of memory; retrying with {new_tile}px tiles")

    with _threads(ctx, upscale_model, min(tile_size, image.shape[1]) * min(tile_size, image.shape[2])):
        return upscale_model.upscale(image, tile=tile_size, overlap=overlap, progress=ctx.progress,
                                     check_cancelled=ctx.check_cancelled, on_retry=retried)


def _threads(ctx: NodeContext, upscale_model: Any, positions: int) -> Any:
    """CPU threads for one tile's model call (``nodegraph.threads``: one for small work, the user's choice
    first); nothing to choose off the CPU."""
    from contextlib import nullcontext

    from nodegraph.threads import module_work, workload_threads

    if upscale_model.device.type != "cpu":
        return nullcontext()
    return workload_threads(module_work(upscale_model.descriptor.model, positions), ctx.settings)


NODES = [load_upscale_model, upscale_image_with_model]
