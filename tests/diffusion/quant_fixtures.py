"""A small conv + transformer-MLP stack for quantization and memory tests, and file writers for it.

Layer widths are multiples of 256 so every Linear can be stored in any GGUF
type (k-quants need rows of 256); the 3x3 convolution is 288 wide when
flattened, so Q8_0 stores it (with ComfyUI-GGUF's orig_shape entry) while
Q4_K leaves it F32, as real converters do.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

D, H, C = 256, 512, 32


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(D)
        self.fc1 = nn.Linear(D, H)
        self.fc2 = nn.Linear(H, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(x))))


class TinyNet(nn.Module):
    def __init__(self, depth: int = 3) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(C, D, 3, padding=1)
        self.blocks = nn.ModuleList(Block() for _ in range(depth))
        self.out = nn.Linear(D, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        t = self.conv_in(x).flatten(2).transpose(1, 2)
        for block in self.blocks:
            t = block(t)
        return self.out(t).transpose(1, 2).reshape(b, C, h, w)


def random_state(depth: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """fp32 weights scaled like a trained model's (std 1/sqrt(fan_in)), biases and norms non-trivial."""
    with torch.device("meta"):
        ref = TinyNet(depth)
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, t in ref.state_dict().items():
        if t.ndim >= 2:
            fan_in = t[0].numel()
            sd[key] = torch.randn(t.shape, generator=g) / fan_in**0.5
        elif key.endswith("norm.weight"):
            sd[key] = 1 + 0.1 * torch.randn(t.shape, generator=g)
        else:
            sd[key] = 0.1 * torch.randn(t.shape, generator=g)
    return sd


def build(sd: dict[str, torch.Tensor], depth: int = 3) -> TinyNet:
    model = TinyNet(depth)
    model.load_state_dict(sd)
    return model.eval().requires_grad_(False)


def meta_model(depth: int = 3) -> TinyNet:
    with torch.device("meta"):
        return TinyNet(depth)


def sample_input(seed: int = 1) -> torch.Tensor:
    return torch.randn(2, C, 8, 8, generator=torch.Generator().manual_seed(seed))


def numpy_state(sd: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in sd.items()}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())
