"""Float tolerances that hold on every CPU, derived from the dtype and the computation.

Why this exists: two correct float computations of the same value differ by rounding, and *how much* depends
on which kernels run -- AVX-512 or AVX2 or generic ATen loops, oneDNN or not, the blocking of a convolution,
the batch size. Those differ between machines (a LoRA check with ``atol=1e-5`` passed on an Intel Xeon and
failed on an AMD EPYC by 1.14e-5 on outputs of magnitude ~10). So a bound tuned on one machine is a bug.

Rounding error is relative to the values involved. A sum or dot product of ``n`` terms, added in any order,
errs by at most ``n * u`` times the magnitude of its terms (u = eps / 2), and in practice -- the rounding
errors of the additions being unbiased -- by about ``sqrt(n) * u`` (Wilkinson; Higham, *Accuracy and Stability
of Numerical Algorithms*, 2.8). Each layer of a network adds such an error on values of the output's scale
(normalisation layers keep them there). So the bound used here is

    rtol = SIGMAS * eps(dtype) * sqrt(reduction) * depth        (relative to the magnitude compared)

``reduction`` is the longest sum behind one output (``in_channels * kh * kw`` for a conv, the input width for
a Linear, ``rank`` for a LoRA ``up @ down``, the sequence length for attention); ``depth`` the number of such
reductions one after another; ``SIGMAS = 4`` is a safety factor on the typical error (and layers' errors are
added, not added in quadrature). The magnitude is the largest ``|expected|`` unless a ``scale`` is given.

Measured margins (``TOLERANCE_LOG=path`` appends error/tolerance per comparison): over tests/diffusion,
tests/upscale and tests/image the largest ratio was 0.24 with the default kernels, with
``ATEN_CPU_CAPABILITY=default`` and with ``ONEDNN_MAX_CPU_ISA=AVX2`` (CI runs all three) on an AMD EPYC. A real
bug -- a wrong scale, a transposed kernel, a missing bias, a wrong head count -- errs by 1e-2 .. 1 relative,
above every bound here (the loosest, a whole 4-step txt2img pipeline against diffusers, is 2.2e-3).

Comparisons that must be *exact* (same kernels on both sides, e.g. a no-op patch against the base model)
should keep ``atol=0, rtol=0``; they do not depend on the CPU.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch

SIGMAS = 4.0  # safety factor on the typical (random-walk) rounding error


def rounding_rtol(dtype: torch.dtype | np.dtype | type = torch.float32, *, reduction: int = 1, depth: int = 1) -> float:
    """Relative rounding bound for ``depth`` chained reductions of ``reduction`` terms each in ``dtype``.

    Relative to the magnitude of the values compared (see the module docstring for the derivation).
    """
    if reduction < 1 or depth < 1:
        raise ValueError("reduction and depth must be >= 1")
    return SIGMAS * _eps(dtype) * math.sqrt(reduction) * depth


def tolerance(
    expected: Any,
    *,
    reduction: int = 1,
    depth: int = 1,
    dtype: torch.dtype | np.dtype | None = None,
    scale: float | None = None,
) -> float:
    """Absolute tolerance for comparing against ``expected``: ``rounding_rtol * magnitude``.

    ``magnitude`` is ``scale`` when given (use it when intermediate values are larger than the result, e.g.
    a sum that cancels), else the largest ``|expected|``. ``dtype`` defaults to the dtype of ``expected``.
    """
    exp = _as_tensor(expected)
    dt = dtype if dtype is not None else exp.dtype
    magnitude = float(scale) if scale is not None else float(exp.abs().max()) if exp.numel() else 0.0
    return rounding_rtol(dt, reduction=reduction, depth=depth) * magnitude


def assert_close(
    actual: Any,
    expected: Any,
    *,
    reduction: int = 1,
    depth: int = 1,
    dtype: torch.dtype | np.dtype | None = None,
    scale: float | None = None,
    check_dtype: bool = True,
) -> None:
    """Assert ``|actual - expected| <= tolerance(expected, ...)`` elementwise (tensors or arrays).

    The message names the bound and how it was derived, so a failure says whether it is rounding or a bug.
    """
    act, exp = _as_tensor(actual), _as_tensor(expected)
    if isinstance(actual, np.ndarray) or isinstance(expected, np.ndarray):
        dtype = dtype if dtype is not None else _float_dtype(act, exp)
        act, exp = act.double(), exp.double()
        check_dtype = False
    tol = tolerance(exp, reduction=reduction, depth=depth, dtype=dtype or exp.dtype, scale=scale)
    _log_margin(act, exp, tol)
    torch.testing.assert_close(
        act, exp, rtol=0, atol=tol, check_dtype=check_dtype,
        msg=lambda m: f"{m}\n(tolerance {tol:.3g} = {SIGMAS:g} * eps * sqrt(reduction {reduction})"
        f" * depth {depth} * magnitude; see tests/tolerance.py)",
    )


def _log_margin(act: torch.Tensor, exp: torch.Tensor, tol: float) -> None:
    """With ``TOLERANCE_LOG=path`` set, append the error/tolerance ratio per comparison (to audit margins)."""
    path = os.environ.get("TOLERANCE_LOG")
    if not path or act.shape != exp.shape:
        return
    err = float((act.double() - exp.double()).abs().max()) if exp.numel() else 0.0
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{test}\t{err:.3g}\t{tol:.3g}\t{err / tol if tol else float(err > 0):.3f}\n")


def _as_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    return torch.as_tensor(np.asarray(x))


def _float_dtype(*ts: torch.Tensor) -> torch.dtype:
    """The least precise float dtype among the operands (the one whose rounding dominates)."""
    floats = [t.dtype for t in ts if t.is_floating_point()]
    if not floats:
        return torch.float32
    return max(floats, key=lambda d: torch.finfo(d).eps)


def _eps(dtype: Any) -> float:
    if isinstance(dtype, torch.dtype):
        return torch.finfo(dtype if dtype.is_floating_point else torch.float32).eps
    return float(np.finfo(np.dtype(dtype) if np.issubdtype(np.dtype(dtype), np.floating) else np.float32).eps)

