"""Live sampler previews: a TAESD decoder from ``models/vae_approx/`` when one fits the model.

ComfyUI users keep ``taesd_decoder`` / ``taesdxl_decoder`` / ``taesd3_decoder`` / ``taef1_decoder``
files in ``models/vae_approx/``; a file whose name starts with the model family's decoder name
(as ComfyUI matches them) and whose latent channels match is used to decode the x0 estimate of
each step into a real picture.  Otherwise -- no file, a broken file (logged once) -- the preview is
the sampler's cheap latent->RGB projection, so a missing preview decoder never fails a run.

The decoder runs in float32 on the sampler's device on the first image of the batch; latents larger than
:data:`MAX_PREVIEW_LATENT` on a side are area-resized first, so a preview costs a bounded amount
(at most a 512x512 picture for 8x VAEs) however large the image.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from nodes.shared.model_paths import ModelPaths

log = logging.getLogger(__name__)

#: Family name (``FamilyRules.name``) -> the file-name prefix of its preview decoder in ``vae_approx/``.
PREVIEW_DECODERS: dict[str, str] = {
    "sd1": "taesd_decoder",
    "sd2": "taesd_decoder",
    "custom": "taesd_decoder",
    "sdxl": "taesdxl_decoder",
    "sdxl-refiner": "taesdxl_decoder",
    "sd3": "taesd3_decoder",
    "flux-dev": "taef1_decoder",
    "flux-schnell": "taef1_decoder",
    "shapes-demo": "nodegraph-shapes-v1_taesd_decoder",
}
MAX_PREVIEW_LATENT = 64
#: Least time between two TAESD previews of one sampler run (the final step is always shown).
MIN_INTERVAL = 0.2
_EXTENSIONS = (".safetensors", ".sft", ".pth", ".pt")

_CACHE: dict[tuple[str, int, int], Any] = {}
_FAILED: set[tuple[str, int, int]] = set()
_LOCK = threading.Lock()


def find_preview_decoder(settings: Mapping[str, Any], family: str) -> Path | None:
    """The first file in the ``vae_approx`` folders whose name starts with ``family``'s decoder name."""
    prefix = PREVIEW_DECODERS.get(family)
    if prefix is None:
        return None
    paths = ModelPaths.from_settings(settings)
    for name in paths.list("vae_approx"):
        base = name.rsplit("/", 1)[-1]
        if base.startswith(prefix) and base.lower().endswith(_EXTENSIONS):
            return paths.resolve("vae_approx", name)
    return None


def load_state(path: Path) -> dict[str, Any]:
    """Tensors of a decoder file: safetensors, or a torch pickle read with ``weights_only=True``."""
    import torch

    if path.suffix.lower() in (".safetensors", ".sft"):
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError("the file does not hold a state dict")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_decoder(path: Path) -> Any:
    """The :class:`TAESDDecoder` in ``path``, cached by the file's size and mtime; None (logged once)
    if the file is not a TAESD decoder."""
    from .models.taesd import decoder_from_state

    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        if key in _FAILED:
            return None
    try:
        decoder = decoder_from_state(load_state(path))
    except Exception as exc:  # a bad preview file must not fail sampling: fall back, say so once
        log.warning("preview decoder %s not used (%s); showing the latent projection instead", path, exc)
        with _LOCK:
            _FAILED.add(key)
        return None
    with _LOCK:
        _CACHE[key] = decoder
    return decoder


def taesd_preview(decoder: Any, denoised: Any) -> Any:
    """uint8 HxWx3 picture of the first latent of ``denoised`` (model space) through ``decoder``."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    x = denoised[:1].detach().float()
    if next(decoder.parameters()).device != x.device:
        decoder.to(x.device)  # where the model runs: a CPU preview would stall a GPU sampler
    h, w = x.shape[-2:]
    if max(h, w) > MAX_PREVIEW_LATENT:
        scale = MAX_PREVIEW_LATENT / max(h, w)
        x = F.interpolate(x, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area")
    with torch.inference_mode():
        img = decoder(x)[0].clamp(0, 1)
    return (img.permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8).copy()


def previewer(settings: Mapping[str, Any], model: Any,
              fallback: Callable[[Any], Any]) -> Callable[..., Any]:
    """``(denoised, final=False) -> uint8 HxWx3 | None`` for ``model``'s step previews: its TAESD
    decoder if one is found with the model's latent channels, else ``fallback`` (every step).

    A TAESD decode is far dearer than the projection (a quarter of a demo-model step, see
    ``bench/preview.py``), and a person cannot follow more than a few pictures a second, so it runs
    on the first and the ``final`` step and otherwise only once :data:`MIN_INTERVAL` seconds and four
    times its own last cost have passed; other steps get None (viewers keep the last picture)."""
    rules = getattr(model, "rules", None)
    channels = getattr(model, "latent_channels", None)
    plain = lambda denoised, final=False: fallback(denoised)  # noqa: E731
    if rules is None:
        return plain
    try:
        path = find_preview_decoder(settings, rules.name)
    except (OSError, ValueError):
        path = None
    decoder = load_decoder(path) if path is not None else None
    if decoder is None or (channels is not None and decoder.config.latent_channels != channels):
        return plain
    state = {"at": None, "cost": 0.0}

    def preview(denoised: Any, final: bool = False) -> Any:
        now = time.perf_counter()
        if not final and state["at"] is not None and now - state["at"] < max(MIN_INTERVAL, 4 * state["cost"]):
            return None
        image = taesd_preview(decoder, denoised)
        state["at"], state["cost"] = time.perf_counter(), time.perf_counter() - now
        return image

    return preview


__all__ = ["MAX_PREVIEW_LATENT", "MIN_INTERVAL", "PREVIEW_DECODERS", "find_preview_decoder", "load_decoder",
           "previewer", "taesd_preview"]
