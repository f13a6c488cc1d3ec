"""Device-memory management: a byte budget for the compute device, LRU eviction, streamed blocks.

``budget`` parses budgets (``auto`` = free VRAM minus a reserve); ``device`` is the
compute-device abstraction (a real torch device, or an emulated one whose copies live in
CPU memory but are accounted separately, so the policy is testable on CPU); ``weights``
moves a module's tensors between their home (CPU) copy and the device; ``manager`` holds
the models, the LRU and the streaming plan.  Importing this package imports torch.
"""

from .budget import parse_budget, resolve_budget
from .device import ComputeDevice
from .manager import ManagedModel, MemoryBudgetError, MemoryManager, MemoryStats

__all__ = ["ComputeDevice", "ManagedModel", "MemoryBudgetError", "MemoryManager", "MemoryStats",
           "parse_budget", "resolve_budget"]
