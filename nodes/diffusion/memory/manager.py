"""The device-memory manager: budget, LRU eviction (to CPU or dropped), streamed execution.

Policy, in the order it is applied when a model is needed (:meth:`MemoryManager.use`):

1. it becomes the most recently used model;
2. if it fits the budget whole, least-recently-used models are evicted until it fits,
   then it is loaded whole;
3. otherwise every other model is evicted and the model *streams*: everything outside
   its blocks plus as many leading blocks as fit stay on the device; the other blocks
   keep their home copy in CPU memory and are copied in by a forward pre-hook just
   before they run (with the next streamed block prefetched, on a CUDA side stream
   when there is one) and released by a forward hook right after.

Evicting puts home tensors back (weights are read-only, nothing is copied back).  When
the home copies of offloaded models exceed ``offload_budget``, models that can be
re-read (a ``reload`` callable, typically re-opening the memory-mapped file) are dropped:
their home tensors become meta placeholders and come back through ``reload`` on next use.

Accounting counts weight bytes on the device (what this manager controls), not
activations; the budget's reserve covers those.  ``peak`` is the highest accounted total.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .device import ComputeDevice
from .weights import Group, split_groups


class MemoryBudgetError(RuntimeError):
    """The budget cannot hold even a streamed model (its non-block part plus the block window)."""


def _fmt(n: int | None) -> str:
    return "unlimited" if n is None else f"{n / 1024**2:.1f} MiB"


@dataclass
class MemoryStats:
    budget: int | None
    resident: int
    offloaded: int
    peak: int

    def line(self) -> str:
        """One human line for progress bars, status bars and run reports."""
        return (f"device {_fmt(self.resident)} / {_fmt(self.budget)} (peak {_fmt(self.peak)}), "
                f"offloaded {_fmt(self.offloaded)}")


@dataclass(eq=False)
class ManagedModel:
    name: str
    module: nn.Module
    rest: Group
    blocks: list[Group]
    reload: Callable[[], nn.Module] | None = None
    state: str = "offloaded"  # offloaded | device | streaming | dropped
    streamed: list[int] = field(default_factory=list)  # indices of blocks that stream
    hooks: list[Any] = field(default_factory=list)
    transfers: int = 0  # streamed block uploads so far (for tests and reports)

    @property
    def groups(self) -> list[Group]:
        return [self.rest, *self.blocks]

    @property
    def nbytes(self) -> int:
        return sum(g.nbytes for g in self.groups)

    @property
    def device_bytes(self) -> int:
        return sum(g.nbytes for g in self.groups if g.loaded)


class MemoryManager:
    """Keeps registered models' weights on ``device`` within ``budget`` bytes (None = unlimited)."""

    def __init__(self, device: ComputeDevice, budget: int | None, *, offload_budget: int | None = None,
                 prefetch: bool = True) -> None:
        self.device = device
        self.budget = budget
        self.offload_budget = offload_budget
        self.prefetch = prefetch
        self.models: OrderedDict[str, ManagedModel] = OrderedDict()  # least recently used first
        self.resident = 0
        self.peak = 0

    # -- accounting -------------------------------------------------------------------------
    def _add(self, n: int) -> None:
        self.resident += n
        self.peak = max(self.peak, self.resident)

    def stats(self) -> MemoryStats:
        offloaded = sum(g.nbytes for m in self.models.values() if m.state != "dropped"
                        for g in m.groups if not g.loaded)
        return MemoryStats(self.budget, self.resident, offloaded, self.peak)

    def reset_peak(self) -> None:
        self.peak = self.resident

    # -- registration -----------------------------------------------------------------------
    def register(self, name: str, module: nn.Module, *, blocks: Sequence[nn.Module] | None = None,
                 reload: Callable[[], nn.Module] | None = None) -> ManagedModel:
        """Manage ``module`` (its tensors' current place is their home: CPU, or a memory map).

        ``blocks``: the modules that run one after another (e.g. a UNet's input/middle/output
        blocks, a transformer's double and single blocks); default :func:`default_blocks`.
        ``reload``: returns a freshly loaded copy of the module (same parameter names), used
        after a drop.
        """
        if name in self.models:
            raise ValueError(f"a model named {name!r} is already registered")
        rest, groups = split_groups(module, default_blocks(module) if blocks is None else blocks)
        model = ManagedModel(name, module, rest, groups, reload)
        self.models[name] = model
        return model

    def unregister(self, model: ManagedModel) -> None:
        self.evict(model)
        del self.models[model.name]

    # -- loading ----------------------------------------------------------------------------
    @contextmanager
    def use(self, model: ManagedModel) -> Iterator[nn.Module]:
        """Make ``model`` runnable on the device (whole or streaming) for the ``with`` body."""
        self.load(model)
        yield model.module

    def load(self, model: ManagedModel) -> None:
        if self.models.get(model.name) is not model:
            raise ValueError(f"{model.name} is not registered with this memory manager")
        self.models.move_to_end(model.name)
        if model.state in ("device", "streaming"):
            return
        if model.state == "dropped":
            self._reload(model)
        if self.budget is None or model.nbytes <= self.budget:
            self._make_room(model.nbytes, keep=model)
            for g in model.groups:
                self._add(g.load(self.device))
            model.state = "device"
            return
        self._make_room(self.budget, keep=model)
        self._plan_streaming(model)

    def _make_room(self, need: int, keep: ManagedModel) -> None:
        for other in list(self.models.values()):  # least recently used first
            if self.budget is None or self.resident + need <= self.budget:
                return
            if other is not keep and other.state in ("device", "streaming"):
                self.evict(other, keep=keep)

    def _window(self, model: ManagedModel) -> int:
        largest = max((g.nbytes for g in model.blocks), default=0)
        return largest * (2 if self.prefetch else 1)

    def _plan_streaming(self, model: ManagedModel) -> None:
        assert self.budget is not None
        free = self.budget - self.resident
        window = self._window(model)
        minimum = model.rest.nbytes + window
        if minimum > free:
            raise MemoryBudgetError(
                f"{model.name}: a device budget of {_fmt(free)} cannot run it even streamed: its non-block "
                f"weights ({_fmt(model.rest.nbytes)}) plus the streaming window ({_fmt(window)}) need "
                f"{_fmt(minimum)}; raise the budget (--vram-budget) or use a smaller quantization")
        self._add(model.rest.load(self.device))
        room = free - minimum
        model.streamed = []
        for i, g in enumerate(model.blocks):
            if g.nbytes <= room and not model.streamed:  # keep leading blocks resident while they fit
                room -= g.nbytes
                self._add(g.load(self.device))
            else:
                model.streamed.append(i)
                g.pin_homes(self.device)  # uploads from page-locked memory can overlap compute (CUDA)
        for pos, i in enumerate(model.streamed):
            module = model.blocks[i].module
            assert module is not None
            model.hooks.append(module.register_forward_pre_hook(self._pre_hook(model, pos)))
            model.hooks.append(module.register_forward_hook(self._post_hook(model, pos)))
        model.state = "streaming"

    def _pre_hook(self, model: ManagedModel, pos: int) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: Any) -> None:
            group = model.blocks[model.streamed[pos]]
            if not group.loaded:
                self._add(group.load(self.device))
                model.transfers += 1
            group.ready()
            if self.prefetch and pos + 1 < len(model.streamed):
                nxt = model.blocks[model.streamed[pos + 1]]
                if not nxt.loaded:
                    self._add(nxt.load_async(self.device))
                    model.transfers += 1
        return hook

    def _post_hook(self, model: ManagedModel, pos: int) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: Any, _out: Any) -> None:
            group = model.blocks[model.streamed[pos]]
            if group.loaded:
                self.resident -= group.unload()
        return hook

    # -- eviction ---------------------------------------------------------------------------
    def evict(self, model: ManagedModel, *, keep: ManagedModel | None = None) -> None:
        """Send ``model`` off the device (its home copies stay), then enforce the offload budget."""
        for h in model.hooks:
            h.remove()
        model.hooks.clear()
        for g in model.groups:
            if g.loaded:
                self.resident -= g.unload()
        if model.state != "dropped":
            model.state = "offloaded"
        self._enforce_offload_budget(keep)

    def _enforce_offload_budget(self, keep: ManagedModel | None) -> None:
        """Drop re-readable offloaded models, least recently used first, until the offload pool fits.

        ``keep`` (the model being loaded, whose homes are about to be copied) is never dropped.
        """
        if self.offload_budget is None:
            return
        for other in list(self.models.values()):
            if self.stats().offloaded <= self.offload_budget:
                return
            if other is not keep and other.state == "offloaded" and other.reload is not None:
                self.drop(other)

    def drop(self, model: ManagedModel) -> None:
        """Free ``model``'s home copies too; it is re-read through ``reload`` when next used."""
        if model.reload is None:
            raise ValueError(f"{model.name} has no reload function, so it cannot be dropped")
        if model.state in ("device", "streaming"):
            self.evict(model)
        keep = _non_persistent(model.module)
        for g in model.groups:
            g.drop_homes(keep)
        model.state = "dropped"

    def _reload(self, model: ManagedModel) -> None:
        assert model.reload is not None
        fresh = model.reload()
        tensors = {**dict(fresh.named_parameters()), **dict(fresh.named_buffers())}
        for g in model.groups:
            g.adopt(tensors, self.device)
        model.state = "offloaded"


def _non_persistent(module: nn.Module) -> set[str]:
    persistent = set(module.state_dict(keep_vars=True))
    names = {n for n, _ in module.named_parameters()} | {n for n, _ in module.named_buffers()}
    return names - persistent


def default_blocks(module: nn.Module) -> list[nn.Module]:
    """The elements of the outermost ``nn.ModuleList``s, in module order.

    That is a UNet's input/output blocks, a DiT's double/single blocks, a text encoder's
    layers; lists nested inside those (a block's transformer blocks) are part of their block.
    Everything else (embeddings, a UNet's middle block, output heads) stays in the
    always-resident part; pass ``blocks=`` to stream differently.
    """
    out: list[nn.Module] = []
    taken: list[str] = []
    for name, sub in module.named_modules():
        if isinstance(sub, nn.ModuleList) and not any(name.startswith(t + ".") for t in taken):
            taken.append(name)
            out.extend(sub)
    return out
