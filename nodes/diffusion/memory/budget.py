"""Device budgets: ``auto`` (free VRAM minus a reserve on CUDA), explicit sizes, or unlimited.

The reserve is what activations, the dequantized weight of the running layer and the
CUDA context need beyond the weights the manager accounts; 1 GiB or 10 % of the
device, whichever is larger, matches what ComfyUI-style loaders leave free.
"""

from __future__ import annotations

import re

import torch

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "t": 1000**4, "tb": 1000**4, "tib": 1024**4}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([a-zA-Z]*)\s*")


def parse_budget(spec: str | int | float | None) -> int | str | None:
    """``None``/``"none"``/``"unlimited"`` -> None; ``"auto"`` -> "auto"; ``"6GB"``, ``"512MiB"``, 123 -> bytes.

    Raises ValueError with the accepted forms, so a CLI/GUI/server setting can report the fix.
    """
    if spec is None:
        return None
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        if spec <= 0:
            raise ValueError(f"device budget must be positive, got {spec}")
        return int(spec)
    text = str(spec).strip().lower()
    if text in ("", "none", "unlimited", "off"):
        return None
    if text == "auto":
        return "auto"
    if text.endswith("%"):  # of the device's total memory, resolved by resolve_budget
        try:
            pct = float(text[:-1])
        except ValueError:
            pct = -1.0
        if not 0 < pct <= 100:
            raise ValueError(f"cannot read device budget {spec!r}: a percentage must be in (0, 100]")
        return f"{pct}%"
    m = _SIZE.fullmatch(text)
    if not m or m.group(2) not in _UNITS or float(m.group(1)) <= 0:
        raise ValueError(f"cannot read device budget {spec!r}: use 'auto', 'unlimited', a size such as "
                         f"'6GB', '512MiB' or a byte count, or a percentage of the device's memory such as '50%'")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def default_reserve(total: int) -> int:
    return max(1024**3, total // 10)


def resolve_budget(
    spec: str | int | float | None, device: torch.device | str, reserve: int | None = None
) -> int | None:
    """The budget in bytes for ``device`` (None = unlimited).

    ``auto`` on CUDA asks the driver for free memory now; elsewhere there is no device
    memory to protect (CPU) or no reliable query (MPS), so ``auto`` means unlimited.
    """
    parsed = parse_budget(spec if spec is not None else "auto")
    device = torch.device(device)
    if isinstance(parsed, str) and parsed.endswith("%"):
        return int(device_total(device) * float(parsed[:-1]) / 100)
    if parsed != "auto":
        return parsed  # type: ignore[return-value]
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info(device)
    return max(0, free - (default_reserve(total) if reserve is None else reserve))


def device_total(device: torch.device) -> int:
    """Total memory of ``device``: the GPU's on CUDA, physical RAM elsewhere (CPU, MPS's unified memory)."""
    if device.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(device)[1])
    from nodegraph.memory import physical_memory

    return int(physical_memory() or 0)
