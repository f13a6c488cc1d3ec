"""Importing spandrel without torchvision.

spandrel imports ``torchvision`` at module level for exactly two architectures
(LaMa's rotation, RestoreFormer's normalisation), so ``import spandrel`` fails
in this environment, where torchvision is deliberately absent (PyPI's wheels
break next to the CPU torch build).  We therefore register a placeholder
``torchvision`` for the duration of the import only: the two functions those
architectures use raise a clear error if a model of that kind is ever *run*,
while every other architecture (ESRGAN, Compact, SwinIR, HAT, ...) loads and
runs normally.

The placeholder is removed from ``sys.modules`` straight after the import so
that other libraries probing for torchvision (transformers, diffusers) keep
seeing that it is not installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import Any

_LOCK = threading.Lock()
_STUB_NAMES = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")


class TorchvisionMissing(RuntimeError):
    """A spandrel architecture that needs torchvision was run without it."""


def _missing(*_args: Any, **_kwargs: Any) -> Any:
    raise TorchvisionMissing(
        "this upscale model's architecture (LaMa or RestoreFormer) needs torchvision, which nodegraph does "
        "not install; use another model (ESRGAN, Compact, SwinIR, HAT, ...)"
    )


class _InterpolationMode:
    """Stands in for ``torchvision.transforms.InterpolationMode`` (only referenced at call time)."""

    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


def _stub_modules() -> dict[str, types.ModuleType]:
    root = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.rotate = _missing  # type: ignore[attr-defined]
    functional.normalize = _missing  # type: ignore[attr-defined]
    functional.InterpolationMode = _InterpolationMode  # type: ignore[attr-defined]
    transforms.functional = functional  # type: ignore[attr-defined]
    transforms.InterpolationMode = _InterpolationMode  # type: ignore[attr-defined]
    root.transforms = transforms  # type: ignore[attr-defined]
    return {"torchvision": root, "torchvision.transforms": transforms,
            "torchvision.transforms.functional": functional}


def import_spandrel() -> types.ModuleType:
    """Return the ``spandrel`` module, importing it once (thread-safe)."""
    mod = sys.modules.get("spandrel")
    if mod is not None and hasattr(mod, "MAIN_REGISTRY"):
        return mod
    with _LOCK:
        mod = sys.modules.get("spandrel")
        if mod is not None and hasattr(mod, "MAIN_REGISTRY"):
            return mod
        if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is not None:
            return importlib.import_module("spandrel")
        stubs = _stub_modules()
        sys.modules.update(stubs)
        try:
            return importlib.import_module("spandrel")
        finally:
            for name in _STUB_NAMES:
                if sys.modules.get(name) is stubs[name]:
                    del sys.modules[name]


__all__ = ["TorchvisionMissing", "import_spandrel"]
