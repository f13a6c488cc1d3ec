"""Custom sampling: the KSampler taken apart into noise, sampler, sigmas and guider.

These are the pieces ComfyUI's "SamplerCustomAdvanced" graphs are built from
(RandomNoise, KSamplerSelect, BasicScheduler, CFGGuider), so such workflows
import and run.  They carry plain values between nodes:

* NOISE   -- :class:`SeededNoise` (a seed, or ``None`` for "no noise");
* SAMPLER -- :class:`SamplerChoice` (an algorithm name from ``SAMPLERS``);
* SIGMAS  -- a 1-D float32 CPU tensor, high to low;
* GUIDER  -- :class:`CFGGuide` (model, both conditionings, guidance scale).

Contract: RandomNoise(S) + KSamplerSelect(A) + BasicScheduler(B, steps, denoise)
+ CFGGuider(cfg) gives *bit-identical* latents to a KSampler with seed S and
the same settings, because :func:`sample_with_sigmas` draws the same initial
noise, the same per-step noise streams and makes the same model calls as
``sampling.ksampler.sample``.  One deliberate exception, as in ComfyUI: the
KSampler drops the penultimate sigma for dpm_2/dpm_2_ancestral/uni_pc/
uni_pc_bh2, BasicScheduler does not (it cannot know the sampler).

Torch is imported only when a node runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nodegraph.context import NodeContext
from nodegraph.errors import NodeInputError
from nodegraph.spec import Combo, Float, In, Int, Out, Seed, node

from . import estimates as est
from .common import SAMPLER_NAMES, SCHEDULER_NAMES, cpu_threads, latent_for_model, model_scaling, sampling_inputs


@dataclass(frozen=True)
class SeededNoise:
    """NOISE: where the initial (and per-step) noise comes from.  ``seed=None`` adds none."""

    seed: int | None


@dataclass(frozen=True)
class SamplerChoice:
    """SAMPLER: the integration algorithm, by name."""

    name: str


@dataclass(frozen=True)
class CFGGuide:
    """GUIDER: a model with the prompts it is steered by and the guidance scale."""

    model: Any
    positive: Any
    negative: Any
    cfg: float


def sample_with_sigmas(denoiser: Any, latent: Any, sigmas: Any, *, sampler: str, seed: int | None,
                       cfg: float, cond_kwargs: dict[str, Any], uncond_kwargs: dict[str, Any] | None,
                       noise_mask: Any = None, callback: Any = None,
                       model_sampling: Any = None) -> tuple[Any, Any]:
    """Run ``sampler`` over an explicit sigma list; returns (result, last x0 estimate).

    Uses the same code path as the KSampler (``sampling.ksampler.sample_sigmas``), which is
    what makes a custom-sampling graph reproduce a KSampler image; ``seed=None`` = no noise.
    """
    from ..sampling.ksampler import sample_sigmas

    last: dict[str, Any] = {}

    def on_step(step: int, total: int, x_cur: Any, denoised: Any) -> None:
        last["x0"] = denoised
        if callback is not None:
            callback(step, total, x_cur, denoised)

    out = sample_sigmas(denoiser, latent, sigmas, sampler=sampler, seed=0 if seed is None else seed,
                        add_noise=seed is not None, cfg=cfg, cond_kwargs=cond_kwargs, uncond_kwargs=uncond_kwargs,
                        noise_mask=noise_mask, callback=on_step, model_sampling=model_sampling)
    return out, last.get("x0", out)


@node("diffusion.random_noise", category="sampling/custom", display_name="Random Noise",
      inputs=[Seed("noise_seed", 0)], outputs=[Out("NOISE", "NOISE")])
def random_noise(ctx: NodeContext, noise_seed: int) -> SeededNoise:
    """Seeded noise; image i of a batch uses seed + i, exactly like the KSampler's seed."""
    return SeededNoise(int(noise_seed))


@node("diffusion.disable_noise", category="sampling/custom", display_name="Disable Noise",
      outputs=[Out("NOISE", "NOISE")])
def disable_noise(ctx: NodeContext) -> SeededNoise:
    """No noise: sample the input latent as it is (e.g. to finish a partly denoised latent)."""
    return SeededNoise(None)


@node("diffusion.sampler_select", category="sampling/custom", display_name="KSampler Select",
      inputs=[Combo("sampler_name", SAMPLER_NAMES, "euler")], outputs=[Out("SAMPLER", "SAMPLER")])
def sampler_select(ctx: NodeContext, sampler_name: str) -> SamplerChoice:
    """Pick a sampling algorithm by name."""
    return SamplerChoice(sampler_name)


@node("diffusion.basic_scheduler", category="sampling/custom", display_name="Basic Scheduler",
      inputs=[In("model", "MODEL"), Combo("scheduler", SCHEDULER_NAMES, "normal"),
              Int("steps", 20, min=1, max=10000),
              Float("denoise", 1.0, min=0.0, max=1.0, step=0.01,
                    tooltip="< 1 starts part-way down a longer schedule (img2img)")],
      outputs=[Out("SIGMAS", "SIGMAS")])
def basic_scheduler(ctx: NodeContext, model: Any, scheduler: str, steps: int, denoise: float) -> Any:
    """The noise levels a KSampler with this scheduler, step count and denoise would visit."""
    from ..sampling.schedulers import sigmas_for

    return sigmas_for(scheduler, steps, model.schedule, denoise).float().cpu()


@node("diffusion.cfg_guider", category="sampling/custom", display_name="CFG Guider",
      inputs=[In("model", "MODEL"), In("positive", "CONDITIONING"), In("negative", "CONDITIONING"),
              Float("cfg", 8.0, min=0.0, max=100.0, step=0.1, tooltip="classifier-free guidance scale")],
      outputs=[Out("GUIDER", "GUIDER")])
def cfg_guider(ctx: NodeContext, model: Any, positive: Any, negative: Any, cfg: float) -> CFGGuide:
    """Bundle a model with its prompts and classifier-free guidance scale."""
    return CFGGuide(model, positive, negative, float(cfg))


@node("diffusion.sampler_custom_advanced", category="sampling/custom", display_name="Sampler Custom Advanced",
      inputs=[In("noise", "NOISE"), In("guider", "GUIDER"), In("sampler", "SAMPLER"), In("sigmas", "SIGMAS"),
              In("latent_image", "LATENT")],
      outputs=[Out("output", "LATENT"), Out("denoised_output", "LATENT",
                                           "the model's clean-image estimate at the last step")],
      preflight=est.same_latent("latent_image", "output", "denoised_output"))
def sampler_custom_advanced(ctx: NodeContext, noise: SeededNoise, guider: CFGGuide, sampler: SamplerChoice,
                            sigmas: Any, latent_image: Any) -> tuple[Any, Any]:
    """Sample with separately chosen noise, guidance, algorithm and sigma schedule."""
    import torch

    from ..runtime import Latent
    from .sampler import latent_preview

    model = guider.model
    samples = latent_for_model(latent_image, model)
    if samples.shape[1] != model.latent_channels:
        raise NodeInputError("latent_image", f"latent has {samples.shape[1]} channels but the model expects "
                             f"{model.latent_channels}", "make the latent with this model's VAE")
    if sigmas.ndim != 1:
        raise NodeInputError("sigmas", f"expected a 1-D sigma list, got shape {tuple(sigmas.shape)}",
                             "connect a scheduler's SIGMAS output")
    x = samples.to(model.device, torch.float32)
    height, width = samples.shape[-2] * latent_image.downscale, samples.shape[-1] * latent_image.downscale
    cond, uncond = sampling_inputs(model, guider.positive, guider.negative, x.shape[0], height, width, sampler.name,
                                   latent_image.downscale, latent_image)

    from ..preview import previewer
    preview_of = previewer(ctx.settings, model, latent_preview)

    def callback(step: int, n: int, x_cur: Any, denoised: Any) -> None:
        ctx.progress(step + 1, n, preview_of(denoised, step + 1 == n))

    positions = x[:, 0].numel() * (2 if uncond is not None else 1)  # cfg runs the batch twice
    from .device_memory import model_on_device

    with model_on_device(ctx, model.unet, "guider"), cpu_threads(ctx, [model.unet], positions), \
            torch.inference_mode():
        out, x0 = sample_with_sigmas(model.denoiser(), x, sigmas, sampler=sampler.name, seed=noise.seed,
                                     cfg=guider.cfg, cond_kwargs=cond, uncond_kwargs=uncond,
                                     noise_mask=latent_image.noise_mask, callback=callback,
                                     model_sampling=model.schedule)
    mask, f, scaling = latent_image.noise_mask, latent_image.downscale, model_scaling(model)
    return Latent(out.float().cpu(), mask, f, scaling), Latent(x0.float().cpu(), mask, f, scaling)


NODES = [random_noise, disable_noise, sampler_select, basic_scheduler, cfg_guider, sampler_custom_advanced]
