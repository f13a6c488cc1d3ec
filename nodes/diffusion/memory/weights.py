"""A module's tensors as movable slots: each keeps a home (CPU) tensor and may hold a device copy.

Weights are read-only at inference, so eviction never copies back: it simply
puts the home tensor back in place and lets the device copy be freed.
Parameters are re-wrapped (``requires_grad=False``) and buffers set directly,
which also covers the quantized layers' storage buffers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .device import ComputeDevice


@dataclass(eq=False)
class Slot:
    owner: nn.Module
    attr: str
    is_param: bool
    qualname: str
    home: torch.Tensor

    @property
    def nbytes(self) -> int:
        return self.home.numel() * self.home.element_size()

    def put(self, t: torch.Tensor) -> None:
        if self.is_param:
            self.owner._parameters[self.attr] = nn.Parameter(t, requires_grad=False)
        else:
            self.owner._buffers[self.attr] = t


def slots_of(module: nn.Module, prefix: str = "") -> list[Slot]:
    out = []
    for name, sub in module.named_modules(prefix=prefix):
        base = f"{name}." if name else ""
        for attr, p in sub._parameters.items():
            if p is not None:
                out.append(Slot(sub, attr, True, base + attr, p.detach()))
        for attr, b in sub._buffers.items():
            if b is not None:
                out.append(Slot(sub, attr, False, base + attr, b))
    return out


@dataclass(eq=False)
class Group:
    """Tensors that move together (one block, or everything outside the blocks)."""

    slots: list[Slot]
    module: nn.Module | None = None  # the block whose forward hooks stream this group
    loaded: bool = False
    pending: object | None = None  # CUDA event of an in-flight prefetch

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.slots)

    def load(self, device: ComputeDevice) -> int:
        for s in self.slots:
            s.put(device.copy_in(s.home))
        self.loaded = True
        return self.nbytes

    def load_async(self, device: ComputeDevice) -> int:
        """Issue the copies on the side stream (CUDA); synchronous elsewhere."""
        stream = device.side_stream()
        if stream is None:
            return self.load(device)
        with torch.cuda.stream(stream):
            for s in self.slots:
                s.put(device.copy_in(s.home))
            event = torch.cuda.Event()
            event.record(stream)
        self.pending, self.loaded = event, True
        return self.nbytes

    def ready(self) -> None:
        """Make the compute stream wait for an in-flight prefetch and keep its memory alive while used."""
        if self.pending is None:
            return
        current = torch.cuda.current_stream()
        current.wait_event(self.pending)  # type: ignore[arg-type]
        for s in self.slots:
            t = s.owner._parameters[s.attr] if s.is_param else s.owner._buffers[s.attr]
            t.record_stream(current)  # the allocator must not reuse it before the compute that reads it
        self.pending = None

    def unload(self) -> int:
        for s in self.slots:
            s.put(s.home)
        self.loaded, self.pending = False, None
        return self.nbytes

    def pin_homes(self, device: ComputeDevice) -> None:
        for s in self.slots:
            pinned = device.pin(s.home)
            if pinned is not s.home:
                s.home = pinned
                if not self.loaded:
                    s.put(pinned)

    def drop_homes(self, keep: set[str]) -> None:
        """Free the home tensors (replaced by meta placeholders) except those named in ``keep``."""
        for s in self.slots:
            if s.qualname not in keep:
                s.home = torch.empty_like(s.home, device="meta")
                s.put(s.home)

    def adopt(self, tensors: Mapping[str, torch.Tensor], device: ComputeDevice) -> None:
        for s in self.slots:
            if s.home.is_meta:
                t = tensors[s.qualname]
                if t.shape != s.home.shape or t.dtype != s.home.dtype:
                    raise ValueError(f"reloaded {s.qualname}: {t.dtype}{tuple(t.shape)} instead of "
                                     f"{s.home.dtype}{tuple(s.home.shape)}")
                s.home = device.pin(t.detach())
                s.put(s.home)


def split_groups(module: nn.Module, blocks: Iterable[nn.Module]) -> tuple[Group, list[Group]]:
    """(everything outside the blocks, one group per block), slots keyed by qualified names."""
    names = {id(m): n for n, m in module.named_modules()}
    block_groups, in_blocks = [], set()
    for block in blocks:
        if id(block) not in names:
            raise ValueError("a streaming block is not a submodule of the model")
        slots = slots_of(block, prefix=names[id(block)])
        in_blocks.update((id(s.owner), s.attr) for s in slots)
        block_groups.append(Group(slots, block))
    rest = [s for s in slots_of(module) if (id(s.owner), s.attr) not in in_blocks]
    return Group(rest), block_groups
