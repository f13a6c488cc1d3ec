"""Diffusion node pack: model formats, text encoding, sampling, VAE, ControlNet, LoRA, upscaling.

The library code (``models``, ``sampling``, ``text`` ...) is plain PyTorch and
knows nothing about the engine; the node definitions that expose it live in
``nodes.diffusion.pack`` and import torch lazily so that listing nodes or
validating a workflow never pays for a torch import.
"""
