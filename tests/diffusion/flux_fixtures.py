"""Tiny FLUX-family reference models for parity tests (diffusers / transformers as independent references).

Every tensor is random (norm scales around 1, biases non-zero), so a naming or
ordering mistake changes the output.  The diffusers/transformers imports are
done lazily because they cost seconds.
"""

from __future__ import annotations

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: Tiny transformer: hidden 64, 2 heads of 32 (rotary split (4, 14, 14)), 2 double + 2 single blocks.
TINY_FLUX = dict(
    patch_size=1,
    in_channels=64,
    num_layers=2,
    num_single_layers=2,
    attention_head_dim=32,
    num_attention_heads=2,
    joint_attention_dim=24,
    pooled_projection_dim=12,
    axes_dims_rope=(4, 14, 14),
)


def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, rel: float) -> None:
    """Elementwise check with tolerances scaled to the data: ``rtol=rel``, ``atol=rel * max|expected|``."""
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * max(scale, 1e-12))


def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Fan-in-scaled random weights, norm weights ~1 +- 0.2, biases ~0.1 (deterministic per seed)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.ndim == 1 and ("norm" in name or name.endswith("scale")) and not name.endswith("bias"):
                p.copy_(1.0 + 0.2 * noise)
            elif p.ndim == 1:
                p.copy_(0.1 * noise)
            else:
                p.copy_(noise / p[0].numel() ** 0.5)
    return module


def diffusers_flux(guidance: bool, seed: int = 0, **overrides):
    """A random tiny diffusers ``FluxTransformer2DModel`` (dev if ``guidance`` else schnell)."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    model = FluxTransformer2DModel(**{**TINY_FLUX, "guidance_embeds": guidance, **overrides})
    return randomize_(model, seed).eval()


def pack_latents(x: torch.Tensor) -> torch.Tensor:
    """diffusers' FluxPipeline packing: ``(B, C, H, W)`` -> ``(B, H/2*W/2, C*4)``."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, _, d = x.shape
    x = x.view(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, d // 4, h, w)


def image_ids(h: int, w: int) -> torch.Tensor:
    """diffusers' latent image ids for an ``h x w`` latent: ``(0, row, col)`` per 2x2 patch."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] = torch.arange(h // 2)[:, None]
    ids[..., 2] = torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3)


def diffusers_flux_velocity(model, x, sigma, context, pooled, guidance=None) -> torch.Tensor:
    """Run the diffusers transformer the way FluxPipeline does, in image layout."""
    _, _, h, w = x.shape
    with torch.no_grad():
        out = model(
            hidden_states=pack_latents(x),
            encoder_hidden_states=context,
            pooled_projections=pooled,
            timestep=sigma,
            img_ids=image_ids(h, w),
            txt_ids=torch.zeros(context.shape[1], 3),
            guidance=guidance,
            return_dict=False,
        )[0]
    return unpack_latents(out, h, w)
