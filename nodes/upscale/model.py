"""Upscale models: safe loading of weight files and architecture detection through spandrel.

spandrel recognises ~40 super-resolution/restoration architectures (ESRGAN,
Real-ESRGAN Compact, SwinIR, HAT, DAT, ...) from the *key names and tensor
shapes* of a state dict.  We read the file ourselves rather than with
``spandrel.ModelLoader.load_from_file`` because:

* ``.pth``/``.ckpt``/``.bin`` go through ``torch.load(weights_only=True)``,
  torch's own allow-list unpickler (spandrel uses its own allow-list, which is
  also safe, but one vetted mechanism across the project is easier to trust);
* spandrel loads ``.pt`` files with ``torch.jit.load`` (TorchScript), which
  deserialises code; we refuse TorchScript instead.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .spandrel_compat import import_spandrel
from .tiled import ProgressFn, tiled_upscale

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


class UpscaleModelError(ValueError):
    """A file that is not a usable upscale model (message meant for the user)."""


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a weight file, on the CPU, without executing anything from the file."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            sd: Any = load_file(str(p), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise UpscaleModelError(f"{p.name}: not a readable safetensors file ({exc})") from None
    elif suffix in PICKLE_SUFFIXES:
        try:
            with warnings.catch_warnings():  # torch warns it would "dispatch to jit.load"; it refuses instead
                warnings.filterwarnings("ignore", message=".*TorchScript archive", category=UserWarning)
                sd = torch.load(str(p), map_location="cpu", weights_only=True)
        except RuntimeError as exc:
            if "torchscript" in str(exc).lower():
                raise UpscaleModelError(f"{p.name}: TorchScript files are not supported (they contain code); "
                                        "use the plain .pth/.safetensors weights") from None
            raise UpscaleModelError(f"{p.name}: cannot read weights ({exc})") from None
        except Exception as exc:  # UnpicklingError for disallowed globals, zip errors, EOF...
            raise UpscaleModelError(f"{p.name}: refused or unreadable ({type(exc).__name__}: {exc}); only plain "
                                    "tensor state dicts can be loaded safely") from None
    else:
        raise UpscaleModelError(f"{p.name}: unsupported file type {suffix!r}; use .safetensors or .pth")
    if not isinstance(sd, Mapping):
        raise UpscaleModelError(f"{p.name}: the file holds a {type(sd).__name__}, not a state dict of tensors")
    return dict(sd)


@dataclass
class UpscaleModel:
    """What flows on an ``UPSCALE_MODEL`` wire: a spandrel image model plus its name."""

    descriptor: Any  # spandrel.ImageModelDescriptor
    name: str = ""

    @property
    def scale(self) -> int:
        return int(self.descriptor.scale)

    @property
    def architecture(self) -> str:
        return str(self.descriptor.architecture.name)

    @property
    def input_channels(self) -> int:
        return int(self.descriptor.input_channels)

    @property
    def output_channels(self) -> int:
        return int(self.descriptor.output_channels)

    @property
    def device(self) -> torch.device:
        return self.descriptor.device

    @property
    def dtype(self) -> torch.dtype:
        return self.descriptor.dtype

    @property
    def tiling_allowed(self) -> bool:
        """False for models that need the whole image at once (spandrel's ``ModelTiling.INTERNAL``)."""
        return getattr(self.descriptor.tiling, "name", "SUPPORTED") != "INTERNAL"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``[1,C,h,w]`` in 0..1 on the model's device/dtype -> ``[1,C',h*s,w*s]`` in 0..1."""
        return self.descriptor(x)

    def __nodegraph_nbytes__(self) -> int:
        module = self.descriptor.model
        return sum(t.element_size() * t.nelement() for t in (*module.parameters(), *module.buffers()))

    def upscale(self, image: torch.Tensor, *, tile: int = 512, overlap: int = 32, blend: str = "cosine",
                progress: ProgressFn | None = None, check_cancelled: Callable[[], None] | None = None,
                on_retry: Callable[[int, BaseException], None] | None = None) -> torch.Tensor:
        """Upscale an IMAGE ``[B,H,W,C]`` (0..1, CPU) tile by tile; returns an RGB IMAGE ``[B,H*s,W*s,3]``.

        Greyscale models get the image's luma and their output is repeated to
        RGB; an alpha channel in the input is ignored.
        """
        if image.ndim != 4 or image.shape[-1] < 1:
            raise ValueError(f"expected an IMAGE [B,H,W,C], got shape {tuple(image.shape)}")
        x = image.movedim(-1, 1).float()
        rgb = x[:, :3] if x.shape[1] >= 3 else x[:, :1].repeat(1, 3, 1, 1)
        cin = self.input_channels
        if cin == 3:
            x = rgb
        elif cin == 1:
            x = (0.299 * rgb[:, 0:1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:3])
        elif cin == 4:
            alpha = x[:, 3:4] if x.shape[1] >= 4 else torch.ones_like(rgb[:, :1])
            x = torch.cat([rgb, alpha], dim=1)
        else:
            raise UpscaleModelError(f"{self.name}: models with {cin} input channels are not supported")
        if not self.tiling_allowed:
            tile = max(x.shape[-2:])
        y = tiled_upscale(x, self, self.scale, tile=tile, overlap=overlap, blend=blend, device=self.device,
                          dtype=self.dtype, progress=progress, check_cancelled=check_cancelled, on_retry=on_retry)
        if y.shape[1] == 1:
            y = y.repeat(1, 3, 1, 1)
        return y[:, :3].clamp(0.0, 1.0).movedim(1, -1).contiguous()


def _stored_dtype(sd: Mapping[str, torch.Tensor]) -> torch.dtype | None:
    for t in sd.values():
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            return t.dtype
    return None


def model_from_state_dict(sd: Mapping[str, Any], *, name: str = "", device: torch.device | str = "cpu",
                          dtype: torch.dtype | Callable[[torch.dtype | None], torch.dtype] | None = None,
                          ) -> UpscaleModel:
    """Detect the architecture of ``sd`` and build the model on ``device``.

    ``dtype`` may be a function of the weights' stored dtype (pass the device
    policy's ``compute_dtype``); half precision falls back to float32 for
    architectures spandrel marks as not supporting it.
    """
    spandrel = import_spandrel()
    canonical = spandrel.canonicalize_state_dict(dict(sd))
    if not all(isinstance(v, torch.Tensor) for v in canonical.values()):
        bad = next(k for k, v in canonical.items() if not isinstance(v, torch.Tensor))
        raise UpscaleModelError(f"{name or 'model'}: entry {bad!r} is not a tensor; not a model state dict")
    try:
        desc = spandrel.MAIN_REGISTRY.load(canonical)
    except spandrel.UnsupportedModelError:
        raise UpscaleModelError(f"{name or 'model'}: architecture not recognised (spandrel knows ESRGAN, "
                                "Real-ESRGAN Compact, SwinIR, HAT, DAT, OmniSR, SPAN, ...)") from None
    except Exception as exc:  # shapes that match a detector but not its loader
        raise UpscaleModelError(f"{name or 'model'}: looks like a known architecture but failed to load "
                                f"({type(exc).__name__}: {exc})") from None
    if not isinstance(desc, spandrel.ImageModelDescriptor):
        raise UpscaleModelError(f"{name or 'model'}: this is a {desc.purpose} model ({desc.architecture.name}), "
                                "not an image-to-image upscaler")
    target = dtype(_stored_dtype(canonical)) if callable(dtype) else (dtype or torch.float32)
    if (target == torch.float16 and not desc.supports_half) or (
            target == torch.bfloat16 and not desc.supports_bfloat16):
        target = torch.float32
    desc.to(device=torch.device(device) if isinstance(device, str) else device, dtype=target)
    desc.eval()
    return UpscaleModel(desc, name)


def load_upscale_model(path: str | os.PathLike[str], *, device: torch.device | str = "cpu",
                       dtype: torch.dtype | Callable[[torch.dtype | None], torch.dtype] | None = None,
                       ) -> UpscaleModel:
    """Read a weight file safely and build its upscale model (see :func:`model_from_state_dict`)."""
    p = Path(path)
    return model_from_state_dict(read_state_dict(p), name=p.name, device=device, dtype=dtype)


__all__ = ["UpscaleModel", "UpscaleModelError", "load_upscale_model", "model_from_state_dict", "read_state_dict"]
