"""Neural-network modules for Stable-Diffusion-family and FLUX.1 checkpoints.

Every module here names its parameters exactly as the original (LDM /
``sgm``, Black Forest Labs for FLUX, Hugging Face for CLIP and T5) files
do, so a checkpoint is loaded by stripping
its component prefix (``model.diffusion_model.``, ``control_model.`` ...)
and assigning the tensors: no key conversion and no second copy of the
weights.  This package deliberately imports nothing so that importing
``nodes.diffusion.models.<x>`` only pays for what ``<x>`` needs.
"""
