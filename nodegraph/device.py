"""Device policy: which torch device nodes compute on, and in which dtype.

The engine only carries the *policy* (a string); torch is imported the first
time a node actually asks for a device, so listing or validating workflows
never pays for it.  Nodes must take their device from here — none hard-codes
``"cuda"`` — so the same workflow runs on a laptop CPU, a Mac (MPS) or a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

VALID_KINDS = ("auto", "cpu", "cuda", "mps")


class DeviceError(ValueError):
    """The requested device does not exist on this machine."""


def check_device_name(name: str) -> str:
    """Validate the syntax of ``auto|cpu|cuda|cuda:N|mps`` without importing torch."""
    kind, sep, index = name.partition(":")
    if kind not in VALID_KINDS or (sep and (kind != "cuda" or not index.isdigit())):
        raise DeviceError(f"unknown device {name!r}; use one of auto, cpu, cuda, cuda:N, mps")
    return name


@dataclass
class DevicePolicy:
    """``auto`` picks CUDA, then Apple MPS, then CPU."""

    name: str = "auto"
    _resolved: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        check_device_name(self.name)

    @property
    def torch_device(self) -> Any:
        """The resolved ``torch.device`` (imports torch on first use)."""
        if self._resolved is None:
            self._resolved = resolve_device(self.name)
        return self._resolved

    def compute_dtype(self, stored: Any = None) -> Any:
        """dtype to compute in for weights stored as ``stored``.

        The engine's default, knowing nothing of the model: fp32 on CPU, where fp16
        GEMMs take minutes and bf16 is only fast with native instructions (an SD1.5
        UNet step took 94 s in bf16 vs 36 s in fp32 on an earlier Intel Xeon, and is
        about twice as fast as fp32 on a Zen 4 EPYC that has the instructions).  Packs that know a model's
        size refine it (the diffusion pack: bf16 for large models on such CPUs).  On
        CUDA/MPS half-precision weights stay half (that is why people ship them), and
        fp32 weights stay fp32.
        """
        import torch

        dev = self.torch_device
        if dev.type == "cpu" or stored is None:
            return torch.float32
        if stored in (torch.float16, torch.bfloat16):
            if dev.type == "mps" and stored is torch.bfloat16:
                return torch.float16
            return stored
        return torch.float32

    def empty_cache(self) -> None:
        """Return cached accelerator memory to the driver (after OOM, on unload)."""
        dev = self._resolved
        if dev is None:
            return
        import torch

        if dev.type == "cuda":
            torch.cuda.empty_cache()
        elif dev.type == "mps" and hasattr(torch, "mps"):
            torch.mps.empty_cache()


def resolve_device(name: str) -> Any:
    import torch

    check_device_name(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} requested but this torch build/machine has no CUDA; "
                              "use --device cpu or install a CUDA build of torch")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r} requested but only {torch.cuda.device_count()} GPU(s) exist")
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError("device 'mps' requested but Apple MPS is not available here")
    return dev
