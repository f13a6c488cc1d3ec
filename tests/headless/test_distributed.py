"""Distributed batches: the scheduling logic (pure), and real runs on a local Ray runtime with
2 workers whose manifest and files must equal a local run's."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from nodegraph import Executor
from nodegraph.batch import BatchItem, manifest_core, prepare, run_batch
from nodegraph.distributed import affinity_key, partition, place_file
from tests.headless.helpers import files_in, primitives_registry, text_graph


def test_partition_keeps_groups_together_and_balances():
    keys = ["A"] * 4 + ["B"] * 4
    parts = partition(keys, 2)
    assert sorted(map(sorted, parts)) == [[0, 1, 2, 3], [4, 5, 6, 7]]  # one model per worker
    # Interleaved order: still grouped by model, each worker's list in original order.
    keys = ["A", "B"] * 4
    parts = partition(keys, 2)
    assert {frozenset(keys[i] for i in p) for p in parts} == {frozenset("A"), frozenset("B")}
    assert all(p == sorted(p) for p in parts)
    # One model for all items: split evenly instead of one worker doing everything.
    assert [len(p) for p in partition(["A"] * 7, 2)] == [4, 3]
    # Uneven groups: balance within ceil(n/w), loading a second model only where needed.
    parts = partition(["A"] * 6 + ["B"] * 2, 2)
    assert sorted(len(p) for p in parts) == [4, 4]
    models = sorted(len({("A" if i < 6 else "B") for i in p}) for p in parts)
    assert models == [1, 2]
    assert partition([], 3) == [[], [], []]
    assert sorted(i for p in partition(list("abcdefghij"), 3) for i in p) == list(range(10))
    with pytest.raises(ValueError):
        partition(["A"], 0)


def test_affinity_key_is_the_file_selecting_overrides(tmp_path):
    from tests.headless.diffusion_helpers import diffusion_registry, save_graph, settings, write_models

    models = tmp_path / "models"
    write_models(models, ("m1.safetensors", "m2.safetensors"))
    reg = diffusion_registry()
    plan = prepare(save_graph("m1.safetensors"), ["ckpt.ckpt_name=m1.safetensors,m2.safetensors",
                                                  "sampler.seed=1..2"], reg, settings=settings(models),
                   output_dir=tmp_path / "out")
    keys = [affinity_key(plan, reg, item) for item in plan.items]
    assert keys[0] == keys[1] == (("ckpt.ckpt_name", "m1.safetensors"),)
    assert keys[2] == keys[3] == (("ckpt.ckpt_name", "m2.safetensors"),)
    # Seeds and prompts select no file: they do not split groups.
    assert affinity_key(plan, reg, BatchItem(9, "x", {"sampler.seed": 3})) == ()


def test_place_file_confines_and_takes_the_next_free_number(tmp_path):
    assert place_file(tmp_path, "img_00001.png", b"a") == "img_00001.png"
    assert place_file(tmp_path, "img_00001.png", b"b") == "img_00002.png"
    assert (tmp_path / "img_00002.png").read_bytes() == b"b"
    assert place_file(tmp_path, "sub/x_00001.txt", b"c") == "sub/x_00001.txt"
    with pytest.raises(Exception, match="outside"):
        place_file(tmp_path, "../evil_00001.txt", b"d")


# -- real Ray ------------------------------------------------------------------------------------

def test_without_ray_the_command_exits_2_before_writing_anything(tmp_path, capsys, monkeypatch):
    from nodegraph import save_workflow
    from nodegraph.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail like a missing extra
    wf = save_workflow(text_graph(), tmp_path / "wf.json")
    out = tmp_path / "out"
    assert main(["batch", str(wf), "--sweep", "div.b=1..2", "--ray", "-o", str(out), "--quiet"]) == 2
    assert "pip install 'nodegraph[ray]'" in capsys.readouterr().err
    assert not out.exists()


@pytest.fixture(scope="module")
def ray_runtime():
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'nodegraph[ray]'")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_batch_equals_local_batch_primitives(tmp_path, ray_runtime):
    from nodegraph.distributed import run_batch_ray

    sweeps = ["div.b=0..3", "cat.b=hello,a b/c"]
    local = run_batch(text_graph(), sweeps, registry=primitives_registry(), output_dir=tmp_path / "local",
                      progress=False)
    dist = run_batch_ray(text_graph(), sweeps, workers=2, output_dir=tmp_path / "ray", progress=False)
    assert manifest_core(dist.manifest) == manifest_core(local.manifest)
    assert files_in(tmp_path / "ray") == files_in(tmp_path / "local")
    assert [e["status"] for e in dist.manifest["items"]].count("error") == 2  # failures travel back too


@pytest.mark.slow  # ~22 s: each Ray worker imports torch and loads its checkpoint
def test_ray_batch_equals_local_batch_diffusion_and_loads_each_model_once(tmp_path, ray_runtime):
    import torch

    from nodegraph.distributed import run_batch_ray
    from tests.headless.diffusion_helpers import diffusion_registry, save_graph, settings, write_models

    models = tmp_path / "models"
    write_models(models, ("m1.safetensors", "m2.safetensors"))
    sweeps = ["ckpt.ckpt_name=m1.safetensors,m2.safetensors", "sampler.seed=1..2"]
    # CPU float reductions depend on the thread count, so both sides use 1 thread (as the workers do).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ex = Executor(diffusion_registry(), device="cpu", output_dir=tmp_path / "local", settings=settings(models))
        local = run_batch(save_graph("m1.safetensors"), sweeps, executor=ex, output_dir=tmp_path / "local",
                          progress=False)
    finally:
        torch.set_num_threads(threads)
    dist = run_batch_ray(save_graph("m1.safetensors"), sweeps, workers=2, registry=diffusion_registry(),
                         settings=settings(models), output_dir=tmp_path / "ray", progress=False,
                         threads_per_worker=1)
    assert local.ok and dist.ok
    assert manifest_core(dist.manifest) == manifest_core(local.manifest)
    local_files, ray_files = files_in(tmp_path / "local"), files_in(tmp_path / "ray")
    assert ray_files == local_files and len(ray_files) == 4 and len(set(ray_files.values())) == 4
    # Items sharing a checkpoint went to the same worker: each checkpoint was loaded exactly once.
    loads = [i for i, o in dist.outcomes.items() if "ckpt" in o.executed]
    assert len(loads) == 2
    assert {dist.manifest["items"][i]["overrides"]["ckpt.ckpt_name"] for i in loads} == {
        "m1.safetensors", "m2.safetensors"}


def test_cli_batch_ray_local_runtime(tmp_path, capsys, ray_runtime):
    from nodegraph import save_workflow
    from nodegraph.cli import main

    wf = save_workflow(text_graph(), tmp_path / "wf.json")
    out = tmp_path / "out"
    code = main(["batch", str(wf), "--sweep", "div.b=1..4", "--ray", "--workers", "2", "-o", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert sorted(Path(p).name for p in out.glob("*.txt")) == [f"result_b={b}_00001.txt" for b in range(1, 5)]
