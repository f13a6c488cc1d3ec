"""Helpers shared by the diffusion node modules (torch-free at import time)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from nodegraph.errors import NodeInputError
from nodes.shared.model_paths import ModelNotFound, ModelPaths

from .. import catalogue

# Choice lists come from the sampler/scheduler catalogue (one row per algorithm).
SAMPLER_NAMES = list(catalogue.SAMPLER_NAMES)
SCHEDULER_NAMES = list(catalogue.SCHEDULER_NAMES)
MAX_RESOLUTION = 16384


def resolve_model(settings: Mapping[str, Any], kind: str, name: str, input_name: str) -> Path:
    """Path of a model file, or an error on the input listing the folders searched."""
    try:
        return ModelPaths.from_settings(settings).resolve(kind, name)
    except ModelNotFound as exc:
        raise NodeInputError(input_name, f"{kind} file {name!r} not found",
                             f"put it in one of: {', '.join(str(d) for d in exc.searched)}") from None


def model_file_fingerprint(kind: str, input_name: str):  # noqa: ANN201 - returns a fingerprint hook
    """Fingerprint hook: a model file's identity, size and mtime (re-load when it changes)."""

    def fingerprint(values: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
        path = resolve_model(settings, kind, str(values[input_name]), input_name)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            return {"dir": str(path.resolve()), "files": [(p.name, p.stat().st_size, p.stat().st_mtime_ns)
                                                          for p in files]}
        st = path.stat()
        return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    return fingerprint


def load_error(input_name: str, exc: Exception) -> NodeInputError:
    """Turn a loader exception into an error on the input that named the file (an exception that knows
    its own fix, e.g. a bad precision setting, keeps it)."""
    return NodeInputError(input_name, str(exc), getattr(exc, "fix", None)
                          or "check that the file is a complete model of the right kind")


def sampling_inputs(model: Any, positive: Any, negative: Any, batch: int, height: int, width: int,
                    sampler_name: str | None = None, downscale: int = 8, latent: Any = None) -> tuple[Any, Any]:
    """What the sampler needs for both prompts (model-call kwargs for a single plain entry,
    else a list of regions; see ``runtime.sampling_regions``), and the sampler checked against
    the model -- or an error on the input to blame (a prompt from the wrong text encoder, an
    area outside the image, an SDE sampler on a flow model)."""
    from ..runtime import negative_defaults, sampling_regions
    from ..sampling.samplers import sampler_for

    if sampler_name is not None:
        try:
            sampler_for(sampler_name, flow=model.schedule.is_flow)
        except ValueError as exc:
            raise NodeInputError("sampler_name", str(exc), "pick another sampler") from None
    out = []
    for name, cond in (("positive", positive), ("negative", negative)):
        if cond is None:
            out.append(None)
            continue
        if name == "negative":
            cond = negative_defaults(cond, model, height, width)
        try:
            out.append(sampling_regions(cond, batch, model, height, width, downscale,
                                        latent_image=None if latent is None else latent_for_model(latent, model),
                                        denoise_mask=None if latent is None else latent.noise_mask))
        except ValueError as exc:
            if getattr(exc, "blame", None) == "model":
                raise NodeInputError("model", str(exc), getattr(exc, "fix", None)
                                     or "use a FLUX dev or schnell model") from None
            fix = getattr(exc, "fix", None) or "encode the prompt with the text encoder(s) made for this model"
            raise NodeInputError(name, str(exc), fix) from None
    return out[0], out[1]


def cpu_threads(ctx: Any, modules: Iterable[Any], positions: int) -> AbstractContextManager[Any]:
    """Intra-op threads for calls of ``modules`` over ``positions`` spatial positions (latent pixels, tokens),
    chosen by the engine's policy (``nodegraph.threads``: one thread for small work, the user's
    ``--threads``/``NODEGRAPH_THREADS`` first). Nothing to choose when the models run off the CPU."""
    from nodegraph.threads import module_work, workload_threads

    modules = [m for m in modules if m is not None]
    first = next((p for m in modules for p in m.parameters()), None)
    if first is None or first.device.type != "cpu":
        return nullcontext()
    return workload_threads(sum(module_work(m, positions) for m in modules), ctx.settings)


def model_scaling(model: Any) -> tuple[float, float] | None:
    """(VAE scaling, shift) of the latent space ``model`` samples in, from its family rules (None if unknown)."""
    rules = getattr(model, "rules", None)
    return None if rules is None else (rules.vae_scaling_factor, rules.vae_shift_factor)


def latent_for_model(latent: Any, model: Any) -> Any:
    """``latent.samples`` in the scaling ``model`` samples in: latents that carry another scaling (VAE Encode
    with a VAE whose SD3/FLUX scaling was only guessed) are re-expressed, ``z' = ((z / s + b) - b') * s'``."""
    target = model_scaling(model)
    if latent.scaling is None or target is None or latent.scaling == target:
        return latent.samples
    (s, b), (s2, b2) = latent.scaling, target
    return (latent.samples / s + b - b2) * s2
