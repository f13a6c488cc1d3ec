"""Classifier-free guidance as a denoiser transformer."""

from __future__ import annotations

from typing import Any

import torch

from .model_sampling import Denoiser


def _can_batch(x: torch.Tensor, cond: dict[str, Any], uncond: dict[str, Any]) -> bool:
    """True when cond and uncond kwargs can be concatenated along the batch axis.

    Requires the same keys, tensors whose shapes agree (a 77-token and a
    154-token prompt cannot share a batch), and identical non-tensor values.
    """
    if cond.keys() != uncond.keys():
        return False
    for key, a in cond.items():
        b = uncond[key]
        if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
            if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
                return False
            if a.shape != b.shape or a.ndim == 0 or a.shape[0] != x.shape[0]:
                return False
        elif a is not b and a != b:
            return False
    return True


def cfg_denoiser(
    denoiser: Denoiser, cond_kwargs: dict[str, Any], uncond_kwargs: dict[str, Any], scale: float
) -> Denoiser:
    """Guided denoiser ``uncond + scale * (cond - uncond)``.

    Both predictions come from one model call on a doubled batch when the
    conditioning tensors allow it (half the kernel launches, same result up
    to float rounding); otherwise two calls.  With ``scale == 1`` the formula
    reduces to the conditional prediction, so the unconditional pass is
    skipped entirely.
    """

    def guided(x: torch.Tensor, sigma: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if scale == 1.0:
            return denoiser(x, sigma, **cond_kwargs, **kwargs)
        if _can_batch(x, cond_kwargs, uncond_kwargs):
            merged = {
                k: torch.cat([v, uncond_kwargs[k]]) if isinstance(v, torch.Tensor) else v
                for k, v in cond_kwargs.items()
            }
            sigma_b = torch.as_tensor(sigma, device=x.device).reshape(-1).expand(x.shape[0])
            out = denoiser(torch.cat([x, x]), torch.cat([sigma_b, sigma_b]), **merged, **kwargs)
            cond, uncond = out.chunk(2)
        else:
            cond = denoiser(x, sigma, **cond_kwargs, **kwargs)
            uncond = denoiser(x, sigma, **uncond_kwargs, **kwargs)
        return uncond + scale * (cond - uncond)

    return guided
