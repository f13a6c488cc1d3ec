"""The compute device as the memory manager sees it: copy a tensor in, and (CUDA) a copy stream.

``ComputeDevice.emulated()`` stands for a device on machines without one: a
"device copy" is a fresh CPU clone, so device and home memory are genuinely
separate buffers and the manager's accounting, eviction and streaming run the
same code path as on CUDA.  On CUDA, copies from pinned memory are issued
non-blocking on a side stream so block i+1 uploads while block i computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ComputeDevice:
    device: torch.device
    emulated: bool = False
    _stream: object | None = field(default=None, repr=False)

    @classmethod
    def emulated_device(cls) -> ComputeDevice:
        return cls(torch.device("cpu"), emulated=True)

    @classmethod
    def of(cls, device: torch.device | str) -> ComputeDevice:
        return cls(torch.device(device))

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda" and not self.emulated

    def copy_in(self, t: torch.Tensor) -> torch.Tensor:
        """The device version of home tensor ``t``.

        Emulated: a clone (separate memory, as a real upload would be).  A real device that
        already holds ``t`` (CPU inference: home and device are the same memory) gets ``t``
        itself, so managing a CPU model never doubles it.  Otherwise a copy, asynchronous
        from pinned memory on CUDA.
        """
        if self.emulated:
            return t.clone()
        if t.device == self.device:
            return t
        return t.to(self.device, non_blocking=self.is_cuda and t.is_pinned())

    def side_stream(self) -> torch.cuda.Stream | None:
        """The copy stream for prefetching (CUDA only; elsewhere copies are synchronous)."""
        if not self.is_cuda:
            return None
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        return self._stream  # type: ignore[return-value]

    def pin(self, t: torch.Tensor) -> torch.Tensor:
        """Page-locked home copy, so uploads can be asynchronous (CUDA only)."""
        return t.pin_memory() if self.is_cuda and not t.is_pinned() else t
