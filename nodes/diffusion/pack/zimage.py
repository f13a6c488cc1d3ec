"""Z-Image nodes (ComfyUI's meaning): ModelSamplingAuraFlow.

Z-Image loads with Load Diffusion Model (its DiT), Load CLIP type ``lumina2`` (the Qwen3-4B
encoder; its tokenizer is built in) and Load VAE (FLUX's ae.safetensors); its latent comes from
Empty SD3 Latent Image.  Those nodes live in :mod:`.flux`; this module adds the model-sampling
node of the official Z-Image workflow.
"""

from __future__ import annotations

from nodegraph.context import NodeContext
from nodegraph.errors import NodeInputError
from nodegraph.spec import Float, In, Out, node


@node("diffusion.model_sampling_aura_flow", category="advanced/model", display_name="ModelSamplingAuraFlow",
      inputs=[In("model", "MODEL"),
              Float("shift", 1.73, min=0.0, max=100.0, step=0.01,
                    tooltip="flow time shift: larger spends more steps at high noise (Z-Image: 3.0)")],
      outputs=[Out("MODEL", "MODEL")])
def model_sampling_aura_flow(ctx: NodeContext, model, shift: float):  # noqa: ANN001, ANN201
    """ComfyUI's ModelSamplingAuraFlow: SD3's fixed time shift ``sigma = shift t / (1 + (shift - 1) t)``
    with timestep multiplier 1 (the model is fed sigma itself, not 1000 sigma); Z-Image's own sampling."""
    from dataclasses import replace

    if not getattr(model.schedule, "is_flow", False):
        raise NodeInputError("model", f"ModelSamplingAuraFlow needs a flow-matching model (Z-Image, SD3, FLUX), "
                             f"got a {model.rules.description} model", "connect the MODEL of Load Diffusion Model")
    return model.with_schedule(replace(model.schedule, shift=float(shift), multiplier=1.0))


NODES = [model_sampling_aura_flow]
