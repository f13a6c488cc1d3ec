"""Text side of the diffusion pack: CLIP BPE tokenizer, prompt weighting and prompt encoding.

Kept import-free so that importing the package never pulls in torch; import
the submodules (``tokenizer``, ``weighting``, ``encode``) explicitly.
"""
