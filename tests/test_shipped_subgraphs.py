"""The shipped subgraph component (``subgraphs/``): it loads, is listed like an installed node, and a
workflow using it computes exactly what the shipped hires-fix workflow computes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import nodegraph
from nodegraph.cli import main
from nodegraph.subgraph import extract
from nodes.diffusion.paths import DEMO_DIR

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ROOT / "subgraphs"
needs_demo = pytest.mark.skipif(not (DEMO_DIR / "checkpoints" / "nodegraph-shapes-v1.safetensors").exists(),
                                reason="demo models not trained yet")


def registry() -> nodegraph.Registry:
    reg = nodegraph.Registry.with_installed_packs(strict=True)
    assert reg.load_subgraph_folder(COMPONENTS) == len(list(COMPONENTS.glob("*.json")))
    assert reg.subgraph_errors == {}
    return reg


def with_component() -> nodegraph.Graph:
    """The shipped hires-fix workflow with its second pass replaced by an instance of the component
    (the definition is *not* embedded: it must come from the component folder)."""
    g = nodegraph.load_workflow(ROOT / "workflows" / "hiresfix.json")
    for nid in ("upscale_latent", "sampler_hires"):
        g.remove_node(nid)
    g.add_node("subgraph:hires_fix", id="hires")
    for src, out, inp in (("sampler", "LATENT", "samples"), ("ckpt", "MODEL", "model"),
                          ("positive", "CONDITIONING", "positive"), ("negative", "CONDITIONING", "negative")):
        g.connect(src, out, "hires", inp)
    g.connect("hires", "LATENT", "decode", "samples")
    return g


def test_components_are_listed_with_a_description() -> None:
    reg = registry()
    entry = next(e for e in reg.catalogue() if e["type"] == "subgraph:hires_fix")
    assert entry["category"] == "subgraphs/sampling" and len(entry["description"]) > 40
    assert [i["name"] for i in entry["inputs"] if "widget" in i] == ["scale_by", "denoise", "steps", "seed"]


@needs_demo
def test_component_computes_exactly_the_shipped_hires_fix(tmp_path: Path) -> None:
    reg = registry()
    shipped = nodegraph.load_workflow(ROOT / "workflows" / "hiresfix.json")
    keys = nodegraph.build_plan(shipped, reg, output_dir="/o").keys
    ours = nodegraph.build_plan(with_component(), reg, output_dir="/o").keys
    assert ours["hires/upscale_latent"] == keys["upscale_latent"]
    assert ours["hires/sampler_hires"] == keys["sampler_hires"] and ours["save"] == keys["save"]
    # extract() on the shipped workflow gives the same again
    g = nodegraph.load_workflow(ROOT / "workflows" / "hiresfix.json")
    extract(g, reg, ["upscale_latent", "sampler_hires"], "pass2", instance_id="p")
    assert nodegraph.build_plan(g, reg, output_dir="/o").keys["save"] == keys["save"]


@needs_demo
def test_cli_finds_the_component_folder_next_to_workflows(tmp_path: Path, capsys, monkeypatch) -> None:
    folder = tmp_path / "project"
    (folder / "workflows").mkdir(parents=True)
    (folder / "subgraphs").mkdir()
    (folder / "subgraphs" / "hires_fix.json").write_text((COMPONENTS / "hires_fix.json").read_text())
    wf = nodegraph.save_workflow(with_component(), folder / "workflows" / "hires.json")
    monkeypatch.chdir(tmp_path)  # no ./subgraphs here: the folder next to workflows/ must be found
    assert main(["validate", str(wf)]) == 0, capsys.readouterr().err
    assert main(["run", str(wf), "--quiet", "-o", str(tmp_path / "out"), "--set", "hires.steps=4",
                 "--report", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["nodes"]["hires/sampler_hires"]["status"] == "executed" and len(report["outputs"]) == 1
    (folder / "subgraphs" / "hires_fix.json").unlink()
    assert main(["validate", str(wf)]) == 2
    assert "unknown subgraph 'hires_fix'" in capsys.readouterr().err
