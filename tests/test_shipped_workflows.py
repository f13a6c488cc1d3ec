"""The shipped workflows run as they are, on the shipped demo models, through the CLI
that README's first command uses."""

from __future__ import annotations

import json
import os
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
# Workflows for models nodegraph does not ship (real FLUX, Z-Image, SDXL files): run on tiny files written by
# the tests (SDXL base + refiner: tests/diffusion/test_sdxl_refiner.py). flux_demo and sd3_txt2img run on the
# shipped demo files.
DEMO_WORKFLOWS = [p for p in WORKFLOWS if p.stem != "flux_txt2img" and not p.stem.startswith(("zimage", "sdxl"))]
DEMO_CKPT = DEMO_DIR / "checkpoints" / "nodegraph-shapes-v1.safetensors"
needs_demo = pytest.mark.skipif(not DEMO_CKPT.exists(), reason="demo models not trained yet")


def test_every_default_workflow_is_shipped_with_a_description() -> None:
    names = {p.stem for p in WORKFLOWS}
    assert {"txt2img", "img2img", "controlnet", "upscale", "hiresfix", "inpaint", "outpaint"} <= names
    for p in WORKFLOWS:
        doc = json.loads(p.read_text())
        assert doc["format"] == "nodegraph.workflow"
        assert len(doc["meta"]["description"]) > 40, p.name


@needs_demo
@pytest.mark.parametrize("path", DEMO_WORKFLOWS, ids=lambda p: p.stem)
def test_shipped_workflow_validates_against_installed_packs(path: Path) -> None:
    graph = nodegraph.load_workflow(path)
    registry = nodegraph.Registry.with_installed_packs(strict=True)
    assert validate(graph, registry, settings={"workflow_dir": str(path.parent)}) == []


@needs_demo
@pytest.mark.parametrize("name", ["txt2img", "img2img", "controlnet", "upscale", "hiresfix", "inpaint", "outpaint",
                                  "flux_demo", "sd3_txt2img"])
def test_readme_command_runs_each_workflow(name: str, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "nodegraph.cli", "run", str(ROOT / "workflows" / f"{name}.json"),
                           "-o", str(tmp_path / "out"), "--report", str(report), "--device", "cpu"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # this checkout's packs and demo files
    assert proc.returncode == 0, proc.stderr
    data = json.loads(report.read_text())
    assert data["status"] == "ok"
    assert len(data["outputs"]) == 1
    image = np.asarray(Image.open(data["outputs"][0]))
    expected = 128 if name in ("upscale", "hiresfix") else 64
    assert image.shape == (expected, expected, 3)
    assert image.std() > 10  # an actual picture, not a flat fill


@pytest.fixture(scope="module")
def flux_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny random FLUX.1-dev files under the names the shipped workflow uses (ComfyUI's usual names)."""
    from tests.diffusion.flux_pipeline_fixtures import write_flux_files

    models = tmp_path_factory.mktemp("flux_wf") / "models"
    files = write_flux_files(models, guidance=True)
    renames = {("diffusion_models", files.unet): "flux1-dev.safetensors",
               ("text_encoders", files.clip_l): "clip_l.safetensors",
               ("text_encoders", files.t5): "t5xxl_fp16.safetensors",
               ("text_encoders", "tiny_t5xxl.tokenizer.json"): "t5xxl_fp16.tokenizer.json",
               ("vae", files.vae): "ae.safetensors"}
    for (folder, old), new in renames.items():
        (models / folder / old).rename(models / folder / new)
    return models


@pytest.fixture(scope="module")
def zimage_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny random Z-Image files under the names the shipped workflow uses (ComfyUI's official names)."""
    from tests.diffusion.zimage_pipeline_fixtures import write_zimage_files

    models = tmp_path_factory.mktemp("zimage_wf") / "models"
    files = write_zimage_files(models)
    renames = {("diffusion_models", files.unet): "z_image_turbo_bf16.safetensors",
               ("text_encoders", files.qwen3): "qwen_3_4b.safetensors",
               ("text_encoders", files.tokenizer): "qwen_3_4b.tokenizer.json",
               ("vae", files.vae): "ae.safetensors"}
    for (folder, old), new in renames.items():
        (models / folder / old).rename(models / folder / new)
    return models


#: Shipped workflows for models nodegraph does not ship, run on tiny random files written under the
#: names the workflow uses: (workflow, its files' fixture, --set values that keep it small, what a
#: missing-files error must name: the input, the file and the folder it goes in).
SPLIT_FILE_WORKFLOWS = {
    "flux_txt2img": ("flux_models",
                     ["latent.width=64", "latent.height=64", "msf.width=64", "msf.height=64", "sampler.steps=4"],
                     ("unet_name", "flux1-dev.safetensors", "diffusion_models", "clip_name2",
                      "t5xxl_fp16.safetensors", "text_encoders", "ae.safetensors")),
    "zimage_txt2img": ("zimage_models", ["latent.width=64", "latent.height=64", "sampler.steps=3"],
                       ("unet_name", "z_image_turbo_bf16.safetensors", "diffusion_models", "clip_name",
                        "qwen_3_4b.safetensors", "text_encoders", "ae.safetensors")),
}


def _run_cli(name: str, models: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "nodegraph.cli", "run", str(ROOT / "workflows" / f"{name}.json"),
           "-o", str(tmp_path / "out"), "--report", str(tmp_path / "report.json"), "--device", "cpu",
           "--models-dir", str(models), "--quiet"]
    for s in SPLIT_FILE_WORKFLOWS[name][1]:
        cmd += ["--set", s]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("name", sorted(SPLIT_FILE_WORKFLOWS))
def test_split_file_workflow_validates_with_the_files_in_place(name: str, request: pytest.FixtureRequest) -> None:
    models = request.getfixturevalue(SPLIT_FILE_WORKFLOWS[name][0])
    graph = nodegraph.load_workflow(ROOT / "workflows" / f"{name}.json")
    registry = nodegraph.Registry.with_installed_packs(strict=True)
    assert validate(graph, registry, settings={"models_dir": str(models), "include_demo_models": False}) == []


@pytest.mark.parametrize("name", sorted(SPLIT_FILE_WORKFLOWS))
def test_split_file_workflow_runs_end_to_end_to_a_png(name: str, request: pytest.FixtureRequest,
                                                      tmp_path: Path) -> None:
    proc = _run_cli(name, request.getfixturevalue(SPLIT_FILE_WORKFLOWS[name][0]), tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["status"] == "ok" and len(data["outputs"]) == 1
    image = np.asarray(Image.open(data["outputs"][0]))
    assert image.shape == (64, 64, 3)
    assert image.std() > 1  # random tiny weights: not a picture, but not a flat fill either


@pytest.mark.parametrize("name", sorted(SPLIT_FILE_WORKFLOWS))
def test_split_file_workflow_without_the_files_says_which_file_goes_where(name: str, tmp_path: Path) -> None:
    empty = tmp_path / "models"
    empty.mkdir()
    proc = _run_cli(name, empty, tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    for needle in SPLIT_FILE_WORKFLOWS[name][2]:
        assert needle in proc.stderr, (needle, proc.stderr)
