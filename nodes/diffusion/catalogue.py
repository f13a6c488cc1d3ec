"""The sampler and scheduler catalogue: one row per algorithm, everything else derived.

Adding a sampler is its function in :mod:`.sampling.samplers` (named as the
row) plus one row here: the node choice lists, the sampling library's
dispatch table and noise handling, and the ComfyUI name mapping all read this
table.  Torch-free, so node specs and the ComfyUI mapping can import it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

Noise = Literal["none", "ancestral", "brownian"]


@dataclass(frozen=True)
class SamplerInfo:
    """One sampler.

    ``noise``: "none" (deterministic), "ancestral" (fresh noise each step) or "brownian"
    (noise from a Brownian tree, so results barely change with the step count).
    ``discard_penultimate_sigma``: ComfyUI schedules one extra step for it and drops the last
    non-zero sigma (its final step to a tiny sigma is wasteful).  ``comfy_variants``: ComfyUI
    names of the same algorithm that differ only in the device their noise is drawn on.
    ``flow``: how it runs on flow-matching models (FLUX), where noise is mixed into the signal
    rather than added: "same" (the function works unchanged: deterministic samplers integrate the
    same ODE), the name of a variant function that re-mixes noise, or None (not offered there).
    """

    name: str
    noise: Noise = "none"
    discard_penultimate_sigma: bool = False
    comfy_variants: tuple[str, ...] = ()
    flow: str | None = "same"


SAMPLERS: tuple[SamplerInfo, ...] = (
    SamplerInfo("euler"),
    SamplerInfo("euler_ancestral", noise="ancestral", flow="euler_ancestral_rf"),
    SamplerInfo("heun"),
    SamplerInfo("dpm_2", discard_penultimate_sigma=True),
    SamplerInfo("dpm_2_ancestral", noise="ancestral", discard_penultimate_sigma=True, flow="dpm_2_ancestral_rf"),
    SamplerInfo("lms"),
    SamplerInfo("dpmpp_2m"),
    SamplerInfo("dpmpp_2m_sde", noise="brownian", comfy_variants=("dpmpp_2m_sde_gpu",), flow=None),
    SamplerInfo("dpmpp_sde", noise="brownian", comfy_variants=("dpmpp_sde_gpu",), flow=None),
    SamplerInfo("ddim"),
    SamplerInfo("uni_pc", discard_penultimate_sigma=True),
    SamplerInfo("uni_pc_bh2", discard_penultimate_sigma=True),
    SamplerInfo("lcm", noise="ancestral", flow="lcm_rf"),
    SamplerInfo("res_multistep"),
    # ddpm's update is wrong for flow models and ComfyUI has no flow version of it.
    SamplerInfo("ddpm", noise="ancestral", flow=None),
    SamplerInfo("dpmpp_2s_ancestral", noise="ancestral", flow="dpmpp_2s_ancestral_rf"),
    SamplerInfo("dpmpp_3m_sde", noise="brownian", comfy_variants=("dpmpp_3m_sde_gpu",), flow="dpmpp_3m_sde_rf"),
)

#: Sigma schedulers (functions of the same name in :mod:`.sampling.schedulers`), ComfyUI's names.
SCHEDULER_NAMES: tuple[str, ...] = ("normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform",
                                    "beta", "linear_quadratic", "kl_optimal")

SAMPLER_NAMES: tuple[str, ...] = tuple(s.name for s in SAMPLERS)
#: Samplers whose noise comes from a Brownian tree rather than independent draws.
BROWNIAN_SAMPLERS = frozenset(s.name for s in SAMPLERS if s.noise == "brownian")
#: Samplers that add noise during sampling at all.
STOCHASTIC_SAMPLERS = frozenset(s.name for s in SAMPLERS if s.noise != "none")
#: ComfyUI schedules one extra step for these and drops the last non-zero sigma.
DISCARD_PENULTIMATE_SIGMA_SAMPLERS = frozenset(s.name for s in SAMPLERS if s.discard_penultimate_sigma)
#: ComfyUI sampler name -> ours, for variants that differ only in where their noise is drawn.
COMFY_SAMPLER_VARIANTS: Mapping[str, str] = MappingProxyType({v: s.name for s in SAMPLERS for v in s.comfy_variants})
#: Sampler -> the function used instead on flow-matching models.
FLOW_VARIANTS: Mapping[str, str] = MappingProxyType({s.name: s.flow for s in SAMPLERS if s.flow not in (None, "same")})
#: Samplers not offered on flow-matching models (their noise terms assume noise is added).
FLOW_UNSUPPORTED_SAMPLERS = frozenset(s.name for s in SAMPLERS if s.flow is None)


def functions_for(names: tuple[str, ...], namespace: Mapping[str, Any], what: str) -> dict[str, Callable[..., Any]]:
    """``{name: namespace[name]}`` for each catalogue name: how the sampling modules build their
    dispatch tables, failing at import (naming the row) when a row has no function."""
    missing = [n for n in names if not callable(namespace.get(n))]
    if missing:
        raise ImportError(f"the {what} catalogue lists {missing} but no function of that name exists")
    return {n: namespace[n] for n in names}


__all__ = ["BROWNIAN_SAMPLERS", "COMFY_SAMPLER_VARIANTS", "DISCARD_PENULTIMATE_SIGMA_SAMPLERS",
           "FLOW_UNSUPPORTED_SAMPLERS", "FLOW_VARIANTS", "SAMPLERS", "SAMPLER_NAMES", "SCHEDULER_NAMES",
           "STOCHASTIC_SAMPLERS", "SamplerInfo", "functions_for"]
