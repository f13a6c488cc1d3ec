"""Batch and distributed batch take one options object (BatchOptions / RayOptions); keyword
arguments override single fields by name, and a misspelt option is an error, not ignored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodegraph.batch import BatchOptions, manifest_core, prepare, run_batch
from nodegraph.distributed import RayOptions, run_batch_ray
from tests.headless.helpers import primitives_registry, text_graph

SWEEPS = ["div.b=1..3", "cat.b=x,y"]


def test_options_object_and_keywords_run_the_same_batch(tmp_path: Path) -> None:
    options = BatchOptions(mode="zip", output_dir=tmp_path / "a", registry=primitives_registry(), progress=False,
                           targets=None)
    a = run_batch(text_graph(), ["div.b=1..2", "cat.b=x,y"], options)
    b = run_batch(text_graph(), ["div.b=1..2", "cat.b=x,y"], mode="zip", output_dir=tmp_path / "b",
                  registry=primitives_registry(), progress=False)
    assert a.ok and b.ok
    assert [e["name"] for e in a.manifest["items"]] == ["div.b=1_cat.b=x", "div.b=2_cat.b=y"]  # zip
    assert manifest_core(a.manifest) == manifest_core(b.manifest)
    # A keyword overrides one field of the object and leaves the others.
    c = run_batch(text_graph(), SWEEPS, options, mode="grid", output_dir=tmp_path / "c")
    assert len(c.manifest["items"]) == 6
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["mode"] == "grid"


def test_unknown_option_is_a_type_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="outptu_dir"):
        run_batch(text_graph(), SWEEPS, registry=primitives_registry(), outptu_dir=tmp_path)
    with pytest.raises(TypeError, match="wokers"):
        prepare(text_graph(), SWEEPS, primitives_registry(), wokers=2)
    assert not any(tmp_path.iterdir())


def test_prepare_reads_the_options(tmp_path: Path) -> None:
    plan = prepare(text_graph(), ["div.b=1..2", "cat.b=x,y"], primitives_registry(),
                   BatchOptions(mode="zip", workflow_path="wf.json", output_dir=tmp_path))
    assert plan.mode == "zip" and plan.workflow_path == "wf.json" and len(plan.items) == 2


def test_ray_options_split_from_batch_options(tmp_path: Path) -> None:
    """Ray's own options go to RayOptions; the rest to BatchOptions.  Without Ray installed the
    call fails before anything is written, so this checks the split without a runtime."""
    pytest.importorskip("ray")
    with pytest.raises(TypeError, match="threads_per_workr"):
        run_batch_ray(text_graph(), SWEEPS, BatchOptions(output_dir=tmp_path), RayOptions(workers=1),
                      threads_per_workr=2)
    assert not any(tmp_path.iterdir())
