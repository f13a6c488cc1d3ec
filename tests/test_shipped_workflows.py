"""The shipped workflows run as they are, on the shipped demo models, through the CLI
that README's first command uses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import nodegraph
from nodegraph.plan import validate
from nodes.diffusion.paths import DEMO_DIR

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
DEMO_CKPT = DEMO_DIR / "checkpoints" / "nodegraph-shapes-v1.safetensors"
needs_demo = pytest.mark.skipif(not DEMO_CKPT.exists(), reason="demo models not trained yet")


def test_every_default_workflow_is_shipped_with_a_description() -> None:
    names = {p.stem for p in WORKFLOWS}
    assert {"txt2img", "img2img", "controlnet", "upscale", "hiresfix", "inpaint"} <= names
    for p in WORKFLOWS:
        doc = json.loads(p.read_text())
        assert doc["format"] == "nodegraph.workflow"
        assert len(doc["meta"]["description"]) > 40, p.name


@needs_demo
@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_shipped_workflow_validates_against_installed_packs(path: Path) -> None:
    graph = nodegraph.load_workflow(path)
    registry = nodegraph.Registry.with_installed_packs(strict=True)
    assert validate(graph, registry, settings={"workflow_dir": str(path.parent)}) == []


@needs_demo
@pytest.mark.parametrize("name", ["txt2img", "img2img", "controlnet", "upscale", "hiresfix", "inpaint"])
def test_readme_command_runs_each_workflow(name: str, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "nodegraph.cli", "run", str(ROOT / "workflows" / f"{name}.json"),
                           "-o", str(tmp_path / "out"), "--report", str(report), "--device", "cpu"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(report.read_text())
    assert data["status"] == "ok"
    assert len(data["outputs"]) == 1
    image = np.asarray(Image.open(data["outputs"][0]))
    expected = 128 if name in ("upscale", "hiresfix") else 64
    assert image.shape == (expected, expected, 3)
    assert image.std() > 10  # an actual picture, not a flat fill
