"""Test-wide settings.

Qt runs offscreen; OpenMP threads sleep instead of spin-waiting, which on a
shared 2-core machine makes small models many times faster.
"""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
