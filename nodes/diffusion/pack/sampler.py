"""KSampler and KSampler (Advanced): the denoising loop, with progress, previews and cancel.

The sampling maths lives in ``nodes.diffusion.sampling``; this module only
adapts node inputs to it and routes per-step callbacks to the engine
(``ctx.progress`` reports the step, carries a small preview image and raises
if the user cancelled).
"""

from __future__ import annotations

from typing import Any

from nodegraph.context import NodeContext
from nodegraph.errors import NodeInputError
from nodegraph.spec import Combo, Float, In, Int, Out, Seed, node

from . import estimates as est
from .common import SAMPLER_NAMES, SCHEDULER_NAMES, cpu_threads, latent_for_model, model_scaling, sampling_inputs

PREVIEW_EVERY = 1


def latent_preview(denoised: Any) -> Any:
    """A cheap RGB preview of the current x0 estimate (first image of the batch):
    the first three latent channels, each stretched to 0..255.  Works for any VAE
    without decoding, so previews cost nothing next to a model step."""
    import numpy as np

    x = denoised[0, :3].float()
    if x.shape[0] < 3:
        x = x[:1].expand(3, -1, -1)
    lo = x.amin(dim=(1, 2), keepdim=True)
    hi = x.amax(dim=(1, 2), keepdim=True)
    x = (x - lo) / (hi - lo).clamp_min(1e-6)
    return (x.permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8).copy()


def run_sampler(ctx: NodeContext, model, positive, negative, latent, *, seed: int, steps: int,  # noqa: ANN001
                cfg: float, sampler_name: str, scheduler: str, denoise: float = 1.0, start_step: int | None = None,
                end_step: int | None = None, add_noise: bool = True, leftover_noise: bool = False):
    import torch

    from ..runtime import Latent
    from ..sampling.ksampler import sample

    samples = latent_for_model(latent, model)
    if samples.shape[1] != model.latent_channels:
        raise NodeInputError("latent_image", f"latent has {samples.shape[1]} channels but the model expects "
                             f"{model.latent_channels}", "make the latent with this model's VAE")
    batch = samples.shape[0]
    x = samples.to(model.device, torch.float32)
    height, width = samples.shape[-2] * latent.downscale, samples.shape[-1] * latent.downscale
    cond, uncond = sampling_inputs(model, positive, negative, batch, height, width, sampler_name,
                                   latent.downscale, latent)
    total = steps
    from ..preview import previewer
    preview_of = previewer(ctx.settings, model, latent_preview)

    from .device_memory import model_on_device

    def callback(step: int, n: int, x_cur, denoised) -> None:  # noqa: ANN001
        preview = preview_of(denoised, step + 1 == n) if step % PREVIEW_EVERY == 0 or step + 1 == n else None
        memory.publish(ctx)  # streaming moves the peak during the first step
        ctx.progress(step + 1, n, preview)

    positions = x[:, 0].numel() * (2 if uncond is not None else 1)  # cfg runs the batch twice
    # the model is loaded under the executor's device budget (streaming its blocks if it does not fit)
    with model_on_device(ctx, model.unet) as memory, cpu_threads(ctx, [model.unet], positions), \
            torch.inference_mode():
        out = sample(model.denoiser(), model.schedule, x, sampler=sampler_name, scheduler=scheduler, steps=total,
                     seed=seed, cfg=cfg, cond_kwargs=cond, uncond_kwargs=uncond, denoise=denoise,
                     start_step=start_step, end_step=end_step, add_noise=add_noise,
                     return_with_leftover_noise=leftover_noise, noise_mask=latent.noise_mask, callback=callback)
    return Latent(out.float().cpu(), latent.noise_mask, latent.downscale, model_scaling(model))


@node("diffusion.ksampler", category="sampling", display_name="KSampler", version=1,
      inputs=[In("model", "MODEL"), Seed("seed", 0), Int("steps", 20, min=1, max=10000),
              Float("cfg", 7.0, min=0.0, max=100.0, step=0.1, tooltip="classifier-free guidance scale"),
              Combo("sampler_name", SAMPLER_NAMES, "euler"), Combo("scheduler", SCHEDULER_NAMES, "normal"),
              In("positive", "CONDITIONING"), In("negative", "CONDITIONING"), In("latent_image", "LATENT"),
              Float("denoise", 1.0, min=0.0, max=1.0, step=0.01, tooltip="< 1 keeps part of the input (img2img)")],
      outputs=[Out("LATENT", "LATENT")], preflight=est.same_latent("latent_image", "LATENT"))
def ksampler(ctx: NodeContext, model, seed: int, steps: int, cfg: float, sampler_name: str,  # noqa: ANN001, ANN201
             scheduler: str, positive, negative, latent_image, denoise: float):
    """Denoise latents guided by the prompts.  Same seed and settings give the same image on
    any device (noise is drawn on the CPU; image i of a batch uses seed + i)."""
    if denoise == 0:
        return latent_image
    return run_sampler(ctx, model, positive, negative, latent_image, seed=seed, steps=steps, cfg=cfg,
                       sampler_name=sampler_name, scheduler=scheduler, denoise=denoise)


@node("diffusion.ksampler_advanced", category="sampling", display_name="KSampler (Advanced)",
      inputs=[In("model", "MODEL"), Combo("add_noise", ["enable", "disable"], "enable"), Seed("noise_seed", 0),
              Int("steps", 20, min=1, max=10000), Float("cfg", 7.0, min=0.0, max=100.0, step=0.1),
              Combo("sampler_name", SAMPLER_NAMES, "euler"), Combo("scheduler", SCHEDULER_NAMES, "normal"),
              In("positive", "CONDITIONING"), In("negative", "CONDITIONING"), In("latent_image", "LATENT"),
              Int("start_at_step", 0, min=0, max=10000), Int("end_at_step", 10000, min=0, max=10000),
              Combo("return_with_leftover_noise", ["disable", "enable"], "disable")],
      outputs=[Out("LATENT", "LATENT")], preflight=est.same_latent("latent_image", "LATENT"))
def ksampler_advanced(ctx: NodeContext, model, add_noise: str, noise_seed: int, steps: int,  # noqa: ANN001, ANN201
                      cfg: float, sampler_name: str, scheduler: str, positive, negative, latent_image,
                      start_at_step: int, end_at_step: int, return_with_leftover_noise: str):
    """Run a window of the schedule (start/end step), e.g. to split sampling between two
    models or leave noise for a second pass."""
    if end_at_step < start_at_step:
        raise NodeInputError("end_at_step", "end_at_step is before start_at_step", "make end >= start")
    return run_sampler(ctx, model, positive, negative, latent_image, seed=noise_seed, steps=steps, cfg=cfg,
                       sampler_name=sampler_name, scheduler=scheduler, start_step=start_at_step,
                       end_step=end_at_step, add_noise=add_noise == "enable",
                       leftover_noise=return_with_leftover_noise == "enable")


NODES = [ksampler, ksampler_advanced]
