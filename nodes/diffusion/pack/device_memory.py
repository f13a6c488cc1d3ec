"""The executor's device-memory manager, as the diffusion nodes use it.

One :class:`~nodes.diffusion.memory.MemoryManager` per executor lives in
``ctx.services`` (the engine's per-executor store for packs).  Its budget is
``settings["vram_budget"]`` (``--vram-budget`` of run/batch/serve/gui), else
the environment variable ``NODEGRAPH_VRAM_BUDGET``, else ``auto`` (free VRAM
minus a reserve on CUDA, unlimited on CPU).

- The samplers run their model inside :func:`model_on_device`: it is loaded
  under the budget (least recently used models are evicted; a model that
  does not fit streams its blocks) and stays there for the next run.
- The text-encode nodes use :func:`encoders_on_device`, which sends the
  encoders back to their home (CPU) copy right after encoding.
- Both publish the manager's figures as the ``memory`` statistic (CLI
  progress line, run report ``stats.memory``, GUI status bar); ``peak`` is the
  run's (reset to what is resident when a new run starts).

On CPU with an explicit budget the device is *emulated*: device copies are
separate CPU buffers accounted apart from their home copies, so the policy
(and the streaming path CUDA uses) runs and is testable here; without a
budget the CPU device uses the weights in place (no copy) and only counts them.
Models are registered the first time they run and keyed by their module; at
most :data:`MAX_REGISTERED` are kept (the oldest is evicted and forgotten, so
a long-lived server does not pin every model it ever ran).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from nodegraph.context import NodeContext
from nodegraph.errors import NodeInputError

SERVICE = "diffusion.memory"
ENV = "NODEGRAPH_VRAM_BUDGET"
MAX_REGISTERED = 8


def budget_spec(settings: Any) -> str:
    """The budget text in force: the setting, else the environment variable, else ``auto``."""
    value = settings.get("vram_budget") if settings is not None else None
    return str(value or os.environ.get(ENV) or "auto")


class DeviceMemory:
    """The manager plus which modules it holds (by identity), newest last."""

    def __init__(self, spec: str, device: Any) -> None:
        import torch

        from ..memory import ComputeDevice, MemoryManager, resolve_budget

        self.spec, self.device = spec, torch.device(device)
        budget = resolve_budget(spec, self.device)
        emulated = self.device.type == "cpu" and budget is not None
        compute = ComputeDevice.emulated_device() if emulated else ComputeDevice.of(self.device)
        # prefetching block i+1 during block i only pays where copies are asynchronous (a CUDA side
        # stream); elsewhere it would only double the streaming window
        self.manager = MemoryManager(compute, budget, prefetch=compute.is_cuda)
        self.handles: dict[tuple[int, ...], Any] = {}
        self._count = 0
        self._run: object | None = None  # the workflow document of the run being served

    def handle(self, modules: Sequence[Any], kind: str) -> Any:
        """The managed model for ``modules`` (registered on first use), ready to load.

        A LoRA-patched model shares most submodules with its base: the two cannot both have
        their copies in those shared modules, so every other model sharing a submodule with
        this one is evicted first (and before registration, so the homes captured are the real ones).
        """
        from torch import nn

        key = tuple(id(m) for m in modules)
        h = self.handles.pop(key, None)
        if h is not None and any(a is not b for a, b in zip(h.members, modules, strict=True)):
            self.manager.unregister(h)  # an id re-used by a new object after the old one was freed
            h = None
        subs = {id(sub) for m in modules for sub in m.modules()}
        for other in self.handles.values():
            if other.state in ("device", "streaming") and other.submodules & subs:
                self.manager.evict(other)
        if h is None:
            while len(self.handles) >= MAX_REGISTERED:
                self.manager.unregister(self.handles.pop(next(iter(self.handles))))
            root = modules[0] if len(modules) == 1 else nn.ModuleList(modules)
            blocks = [b for m in modules for b in stream_blocks(m)]
            self._count += 1
            h = self.manager.register(f"{kind} #{self._count}", root, blocks=blocks)
            h.members, h.submodules = tuple(modules), subs
        self.handles[key] = h
        return h

    def close(self) -> None:
        """Evict and forget every model (the modules get their home tensors back)."""
        for h in list(self.handles.values()):
            self.manager.unregister(h)
        self.handles.clear()

    def publish(self, ctx: NodeContext) -> None:
        s = self.manager.stats()
        where = f"{self.device}{' (emulated)' if self.manager.device.emulated else ''}"
        streamed = sum(len(m.streamed) for m in self.manager.models.values() if m.state == "streaming")
        ctx.stats("memory", {"line": s.line() + (f", {streamed} blocks streamed" if streamed else ""),
                             "device": where, "budget": s.budget, "resident": s.resident,
                             "offloaded": s.offloaded, "peak": s.peak, "streamed_blocks": streamed})


def stream_blocks(module: Any) -> list[Any]:
    """What streams when a model does not fit: a UNet's input, middle and output blocks (the middle
    block is a tenth of SD1.5), otherwise the outermost module lists (a DiT's double/single blocks,
    an encoder's layers)."""
    from ..memory.manager import default_blocks

    if hasattr(module, "input_blocks") and hasattr(module, "output_blocks") and hasattr(module, "middle_block"):
        return [*module.input_blocks, module.middle_block, *module.output_blocks]
    return default_blocks(module)


def device_memory(ctx: NodeContext) -> DeviceMemory:
    """This executor's manager (made on first use; re-made if the budget setting or device changed)."""
    spec = budget_spec(ctx.settings)
    current = ctx.services.get(SERVICE)
    device = ctx.device
    if current is None or current.spec != spec or str(current.device) != str(device):
        if current is not None:  # its models go back to their homes before another manager takes them
            current.close()
        try:
            current = DeviceMemory(spec, device)
        except ValueError as exc:
            raise NodeInputError(None, f"device memory budget: {exc}",
                                 f"fix --vram-budget or the {ENV} environment variable") from None
        ctx.services[SERVICE] = current
    if ctx.workflow is not None and ctx.workflow is not current._run:
        # a new run (the executor makes one workflow document per run): its peak starts from what
        # is still resident, so reports give the peak of *this* run
        current.manager.reset_peak()
        current._run = ctx.workflow
    return current


def home_device(ctx: NodeContext) -> Any:
    """Where loaders put weights: the compute device on CPU; CPU memory (the home copy the manager
    moves from) when the compute device is a GPU."""
    import torch

    device = torch.device(ctx.device)
    return device if device.type == "cpu" else torch.device("cpu")


@contextmanager
def model_on_device(ctx: NodeContext, module: Any, input_name: str = "model") -> Iterator[DeviceMemory]:
    """Run the body with ``module`` loaded under the budget (whole, or streaming its blocks)."""
    from ..memory import MemoryBudgetError

    dm = device_memory(ctx)
    h = dm.handle([module], "model")
    try:
        dm.manager.load(h)
    except MemoryBudgetError as exc:
        raise NodeInputError(input_name, str(exc), "raise --vram-budget, or load the model as fp8 or GGUF") from None
    dm.publish(ctx)
    try:
        yield dm
    finally:
        dm.publish(ctx)


@contextmanager
def encoders_on_device(ctx: NodeContext, encoders: Sequence[Any]) -> Iterator[DeviceMemory]:
    """Run the body with the text encoders on the device; they leave it (back to their home copy) after."""
    from ..memory import MemoryBudgetError

    modules = [e for e in encoders if e is not None]
    dm = device_memory(ctx)
    if not modules:
        yield dm
        return
    h = dm.handle(modules, "text encoder")
    try:
        dm.manager.load(h)
    except MemoryBudgetError as exc:
        raise NodeInputError("clip", str(exc), "raise --vram-budget, or load the text encoder as GGUF") from None
    try:
        yield dm
    finally:
        dm.manager.evict(h)
        dm.publish(ctx)
