"""Data-only package holding tokenizer data (CLIP's BPE merges, T5's tokenizer.json, Qwen2's BPE merges;
a package so that setuptools ships the files).  Sources and licences: README.md here."""
