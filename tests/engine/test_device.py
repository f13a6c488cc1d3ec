"""Device policy: auto = cuda, then mps, then cpu; explicit devices fail clearly when absent; names are
checked without importing torch; nodes get the policy through their context."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from engine_nodes import make_registry

from nodegraph import DevicePolicy, Executor, Graph, NodeResult, Out, node
from nodegraph.device import DeviceError, check_device_name

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:3", "mps"])
def test_valid_device_names(name):
    assert check_device_name(name) == name
    assert DevicePolicy(name).name == name


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:x", "cuda:", "cpu:0", "mps:1", "", "cuda:-1"])
def test_bad_device_names_are_rejected_clearly(name):
    with pytest.raises(DeviceError, match="use one of auto, cpu, cuda, cuda:N, mps"):
        DevicePolicy(name)
    with pytest.raises(DeviceError):
        Executor(make_registry(), device=name)


def test_device_names_are_checked_without_importing_torch():
    code = ("import sys\nfrom nodegraph.device import DevicePolicy, DeviceError\n"
            "DevicePolicy('cuda:1'); DevicePolicy('auto')\n"
            "try:\n    DevicePolicy('tpu')\nexcept DeviceError:\n    pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_auto_resolves_to_cpu_here_and_computes_in_fp32():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this check is about a CPU-only machine")
    policy = DevicePolicy("auto")
    assert policy.torch_device == torch.device("cpu")
    assert policy.compute_dtype(torch.float16) == torch.float32
    assert policy.compute_dtype() == torch.float32
    policy.empty_cache()  # harmless on CPU


@pytest.mark.parametrize(("name", "needle"), [("cuda", "has no CUDA"), ("cuda:1", "has no CUDA"),
                                              ("mps", "MPS is not available")])
def test_explicit_missing_accelerator_gives_a_clear_error(name, needle):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this check is about a CPU-only machine")
    with pytest.raises(DeviceError, match=needle):
        _ = DevicePolicy(name).torch_device


def test_nodes_receive_the_policy_through_their_context(tmp_path):
    @node("t.where", outputs=[Out("device", "STRING")], output_node=True)
    def where(ctx):
        return NodeResult(outputs=str(ctx.device), ui={"policy": ctx.device_policy.name, "device": str(ctx.device)})

    reg = make_registry()
    reg.add(where)
    g = Graph()
    g.add_node("t.where", id="w")
    report = Executor(reg, device="cpu", output_dir=tmp_path).run(g)
    assert report.ui["w"] == {"policy": "cpu", "device": "cpu"}

    report = Executor(reg, device="cuda", output_dir=tmp_path).run(g)  # the node asks for a device: fails clearly
    pytest.importorskip("torch")
    import torch

    if not torch.cuda.is_available():
        assert report.status == "error" and report.error.node_id == "w"
        assert "DeviceError" in report.error.message and "no CUDA" in report.error.message
