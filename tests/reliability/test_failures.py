"""Failure handling: out-of-memory inside a node, and model files that lie."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from nodegraph import Executor, Graph, In, Int, Out, Registry, node
from nodegraph.errors import WorkflowInvalid


def _oom_registry(state: dict) -> Registry:
    @node("t.load_model", inputs=[Int("size", 1000)], outputs=[Out("MODEL", "MODEL")])
    def load_model(ctx, size):  # noqa: ANN001, ANN202
        state["loads"] += 1
        return np.zeros(size, dtype=np.float32)

    @node("t.big_step", inputs=[In("model", "MODEL"), Int("n", 1)], outputs=[Out("out", "INT")], output_node=True)
    def big_step(ctx, model, n):  # noqa: ANN001, ANN202
        if state["fail"]:
            state["fail"] = False
            raise MemoryError("simulated: cannot allocate 10 GiB")
        return int(model.size) + n

    reg = Registry()
    reg.add_pack("t", [load_model, big_step])
    return reg


def test_out_of_memory_is_reported_on_the_node_models_released_and_next_run_works(tmp_path: Path) -> None:
    state = {"fail": True, "loads": 0}
    ex = Executor(_oom_registry(state), device="cpu", output_dir=tmp_path)
    g = Graph()
    g.add_node("t.load_model", {"size": 1000}, id="loader")
    g.add_node("t.big_step", {"n": 1}, id="step")
    g.connect("loader", "MODEL", "step", "model")

    report = ex.run(g)
    assert report.status == "error"
    assert report.error is not None and report.error.node_id == "step" and report.error.node_type == "t.big_step"
    assert "out of memory" in report.error.message and "released" in report.error.message
    assert report.nodes["step"].status == "error"
    assert len(ex.cache) == 0  # the cached model was released

    again = ex.run(g)
    assert again.status == "ok"
    assert again.results["step"]["out"] == 1001
    assert state["loads"] == 2  # reloaded after the release


def _write_lying_safetensors(path: Path) -> None:
    header = {"model.diffusion_model.conv.weight": {"dtype": "F32", "shape": [1024, 1024],
                                                    "data_offsets": [0, 4 * 1024 * 1024]}}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\x00" * 64)  # far fewer bytes than declared


def test_safetensors_header_lying_about_sizes_names_the_file(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from nodes.diffusion.models.loading import CheckpointError, load_state_dict

    bad = tmp_path / "liar.safetensors"
    _write_lying_safetensors(bad)
    with pytest.raises(CheckpointError) as err:
        sd, _ = load_state_dict(bad)
        _ = [sd[k] for k in sd]
    assert "liar.safetensors" in str(err.value)


def test_lying_checkpoint_through_the_loader_node_is_refused_before_any_work(tmp_path: Path) -> None:
    """The loader reads the file's header while validating (split-file identification), so a header
    that lies about its tensors is a validation error on the input: nothing runs, nothing is cached."""
    pytest.importorskip("torch")
    import nodes.diffusion.pack as diffusion

    models = tmp_path / "models" / "checkpoints"
    models.mkdir(parents=True)
    _write_lying_safetensors(models / "liar.safetensors")
    reg = Registry()
    diffusion.register(reg)
    ex = Executor(reg, device="cpu", output_dir=tmp_path / "out",
                  settings={"models_dir": str(tmp_path / "models"), "include_demo_models": False})
    g = Graph()
    g.add_node("diffusion.checkpoint_loader", {"ckpt_name": "liar.safetensors"}, id="ckpt")
    with pytest.raises(WorkflowInvalid) as info:
        ex.run(g, outputs=["ckpt"])
    (issue,) = info.value.issues
    assert (issue.node_id, issue.input) == ("ckpt", "ckpt_name")
    assert "liar.safetensors" in issue.message and "truncated or corrupt" in issue.message
    assert len(ex.cache) == 0
