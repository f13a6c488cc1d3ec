"""Data-only package holding the CLIP BPE merge list (a package so that setuptools ships the file)."""
