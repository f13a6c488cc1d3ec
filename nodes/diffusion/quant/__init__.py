"""Weights kept in their storage dtype (GGUF blocks, fp8) and expanded per layer at compute.

``kernels`` dequantizes GGUF blocks in torch; ``gguf_file`` reads GGUF files through the
``gguf`` package's reader; ``layers`` holds the quantized Linear/Conv2d layers, on-the-fly
LoRA and ``load_quantized`` which puts a quantized state dict into a model built on meta.
Importing this package imports torch; the pack imports it inside node functions only.
"""
