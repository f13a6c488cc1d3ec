"""Save and load latents as ``.latent`` files that ComfyUI reads and writes.

Our LATENT values are the VAE's *scaled* latents, ``(z - shift) * scale`` (what the
UNet consumes; 0.18215 x the raw VAE latent for SD1.5), while ComfyUI passes the raw
latents ``z`` between its nodes and scales inside the model.  Images agree either way,
but a latent *file* must be on ComfyUI's scale to be exchanged, so these nodes convert
at the file boundary: ``z = ours / scale + shift`` on save, the inverse on load, with the
scale and shift of the connected VAE (SD1.5's when none is connected).

The file layout is ComfyUI's (Save Latent / Load Latent): a safetensors file with the
tensor ``latent_tensor`` and an empty marker tensor ``latent_format_version_0``; files
without the marker are ComfyUI's first format, which stored the scaled latents.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nodegraph.context import NodeContext
from nodegraph.errors import NodeInputError
from nodegraph.outputs import confined_path
from nodegraph.spec import Combo, In, NodeResult, Out, String, node

SD_SCALE = 0.18215
LATENT_KEY = "latent_tensor"
VERSION_MARKER = "latent_format_version_0"
_META_SCALE, _META_SHIFT, _META_DOWNSCALE = ("nodegraph.latent.scaling_factor", "nodegraph.latent.shift_factor",
                                             "nodegraph.latent.downscale")


def _input_dir(settings: Mapping[str, Any] | None) -> Path:
    # Same rule as the image pack's input folder (packs do not import each other).
    settings = settings or {}
    return Path(str(settings.get("input_dir") or os.environ.get("NODEGRAPH_INPUT_DIR") or "input"))


def list_latent_files(settings: Mapping[str, Any] | None = None) -> list[str]:
    """``.latent`` files under the input folder (where ComfyUI's Load Latent looks), sorted."""
    root = _input_dir(settings)
    if not root.is_dir():
        return []
    return sorted((p.relative_to(root).as_posix() for p in root.rglob("*.latent")
                   if p.is_file() and not any(s.startswith(".") for s in p.relative_to(root).parts)), key=str.lower)


def _latent_path(name: str, settings: Mapping[str, Any] | None) -> Path:
    root = _input_dir(settings)
    rel = Path(name)
    if not name or rel.is_absolute() or ".." in rel.parts:
        raise NodeInputError("latent", f"{name!r} is not a file name inside the input folder",
                             f"pick a .latent file from {root}")
    path = root / rel
    if not path.is_file():
        raise NodeInputError("latent", f"latent file {name!r} not found in the input folder {root}",
                             f"put the file into {root} (ComfyUI writes them to output/latents/)")
    return path


def _fingerprint(values: Mapping[str, Any], settings: Mapping[str, Any]) -> tuple[str, int, int]:
    path = _latent_path(values["latent"], settings)
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def vae_scale(vae: Any) -> tuple[float, float]:
    """(scale, shift) of a VAE's latent space; SD1.5's when no VAE is given."""
    config = getattr(getattr(vae, "vae", None), "config", None)
    if config is None:
        return SD_SCALE, 0.0
    return float(config.scaling_factor), float(getattr(config, "shift_factor", 0.0))


def _files_exist(entry: Any) -> bool:
    return all(Path(f).is_file() for f in entry.files)


@node("diffusion.save_latent", category="latent", display_name="Save Latent",
      inputs=[In("samples", "LATENT"),
              String("filename_prefix", "latents/nodegraph", tooltip="name inside the output folder"),
              In("vae", "VAE", optional=True,
                 tooltip="the VAE the latents belong to (its scale); without it: SD1.5's 0.18215")],
      output_node=True, cache_valid=_files_exist)
def save_latent(ctx: NodeContext, samples: Any, filename_prefix: str, vae: Any = None) -> NodeResult:
    """Write ``<prefix>_NNNNN_.latent`` in ComfyUI's format and scale (raw VAE latents), so
    ComfyUI's Load Latent reads the same latents."""
    import torch
    from safetensors.torch import save

    from nodegraph.fileio import atomic_write_bytes

    path = confined_path(ctx.output_dir, filename_prefix, "_.latent")
    scale, shift = vae_scale(vae)
    raw = (samples.samples.float() / scale + shift).contiguous()
    meta = {_META_SCALE: repr(scale), _META_SHIFT: repr(shift), _META_DOWNSCALE: str(samples.downscale)}
    if ctx.workflow is not None:
        meta["workflow"] = json.dumps(ctx.workflow, default=repr)
    atomic_write_bytes(path, save({LATENT_KEY: raw, VERSION_MARKER: torch.tensor([])}, metadata=meta))
    return NodeResult(ui={"latents": [str(path)]}, files=[str(path)])


@node("diffusion.load_latent", category="latent", display_name="Load Latent",
      inputs=[Combo("latent", list_latent_files, tooltip="a .latent file in the input folder"),
              In("vae", "VAE", optional=True,
                 tooltip="the VAE the latents belong to (its scale); without it: SD1.5's 0.18215")],
      outputs=[Out("LATENT", "LATENT")], fingerprint=_fingerprint)
def load_latent(ctx: NodeContext, latent: str, vae: Any = None) -> Any:
    """Read a ComfyUI ``.latent`` file (either of its formats) onto our scale."""
    from ..models.loading import LazySafetensors
    from ..runtime import Latent

    path = _latent_path(latent, ctx.settings)
    try:
        tensors = LazySafetensors(str(path))
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input problem
        raise NodeInputError("latent", f"cannot read {path.name}: {exc}", "pick a file written by Save Latent") \
            from None
    if LATENT_KEY not in tensors:
        raise NodeInputError("latent", f"{path.name} has no {LATENT_KEY!r} tensor (keys: {sorted(tensors)[:5]})",
                             "pick a file written by ComfyUI's or nodegraph's Save Latent")
    stored = tensors[LATENT_KEY].float().clone()
    if stored.ndim != 4:
        raise NodeInputError("latent", f"{path.name} holds a tensor of shape {list(stored.shape)}, not "
                             "[batch, channels, height, width]", "pick an image latent file")
    raw = stored if VERSION_MARKER in tensors else stored / SD_SCALE  # ComfyUI's first format was scaled
    scale, shift = vae_scale(vae)
    downscale = int(vae.downscale) if vae is not None else 8
    return Latent((raw - shift) * scale, downscale=downscale)


NODES = [save_latent, load_latent]
