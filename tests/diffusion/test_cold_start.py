"""Cold start: loading models must not pull in heavy machinery it does not use.

Building a module on the meta device still runs every ``reset_parameters()``; on meta tensors ``normal_`` and
``uniform_`` go through ``torch._refs``, whose first use imports ``torch._dynamo`` (~1 s idle, 3.5 s on a loaded
2-core machine) for nothing. ``build_on_meta`` skips initialisation; these tests check that in a fresh
interpreter (the only place an import can be observed) and that skipping stays confined to the build.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from nodes.diffusion.models.loading import build_on_meta
from training.common import CHECKPOINT_PATH, CONTROLNET_PATH

ROOT = Path(__file__).resolve().parents[2]

_LOAD_DEMO = f"""
import sys
from nodes.diffusion.checkpoint import load_checkpoint, load_controlnet_file
ckpt = load_checkpoint({str(CHECKPOINT_PATH)!r})
control = load_controlnet_file({str(CONTROLNET_PATH)!r})
assert None not in (ckpt.model, ckpt.clip, ckpt.vae, control)
heavy = sorted(m for m in ("torch._dynamo", "torch._inductor", "sympy") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
"""


@pytest.mark.skipif(not CHECKPOINT_PATH.exists(), reason="demo models not exported")
def test_loading_demo_checkpoint_and_controlnet_does_not_import_dynamo() -> None:
    """UNet, CLIP, VAE and ControlNet built from the shipped files in a fresh process: no torch._dynamo."""
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD_DEMO], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "HEAVY=\n" in proc.stdout, f"imported while loading: {proc.stdout.strip()}"


def test_build_on_meta_skips_init_and_leaves_other_builds_alone() -> None:
    """Meta build: shapes only. Outside it (and in another thread during it) modules are initialised."""
    built: list[nn.Linear] = []

    def factory() -> nn.Sequential:
        worker = threading.Thread(target=lambda: built.append(nn.Linear(8, 8)))
        worker.start()
        worker.join()
        return nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.Embedding(5, 3, padding_idx=0))

    model = build_on_meta(factory)
    assert all(p.is_meta for p in model.parameters())
    assert model[0].weight.shape == (3, 4) and model[2].weight.shape == (5, 3)
    after = nn.Linear(4, 3)
    for real in (built[0], after):
        assert not real.weight.is_meta and real.weight.abs().sum() > 0  # initialised, not left empty
    assert torch.equal(nn.LayerNorm(3).weight, torch.ones(3))

