"""The diffusion nodes run their models with the thread count nodegraph.threads chooses.

Observed from inside the run: every sampler step reports progress, and the listener records how many intra-op
threads torch has at that moment.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import nodegraph
from nodegraph.events import NodeProgress
from nodegraph.threads import ENV_VAR
from training.common import CHECKPOINT_PATH

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not CHECKPOINT_PATH.exists(), reason="demo models not exported")


def _threads_during_sampling(tmp_path: Path, settings: dict) -> set[int]:
    graph = nodegraph.load_workflow(ROOT / "workflows" / "txt2img.json")
    graph.set_value("sampler", "steps", 2)
    ex = nodegraph.Executor(device="cpu", output_dir=tmp_path,
                            settings={"workflow_dir": str(ROOT / "workflows"), **settings})
    seen: set[int] = set()

    def listen(event: object) -> None:
        if isinstance(event, NodeProgress) and event.node_id == "sampler":
            seen.add(torch.get_num_threads())

    ex.run(graph, on_event=listen).raise_for_status()
    return seen


def test_demo_model_samples_on_one_thread_and_user_choice_wins(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv(ENV_VAR, raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert _threads_during_sampling(tmp_path / "auto", {}) == {1}  # tiny model, 16x16 latent
        assert torch.get_num_threads() == 2  # restored after the node
        assert _threads_during_sampling(tmp_path / "setting", {"threads": 3}) == {3}
        monkeypatch.setenv(ENV_VAR, "2")
        torch.set_num_threads(1)
        assert _threads_during_sampling(tmp_path / "env", {}) == {2}
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_flux_text_encode_runs_with_the_thread_policy(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """CLIP Text Encode (FLUX) sizes its threads like the other model nodes (the policy arrived in a
    branch that did not have the FLUX nodes yet)."""
    from nodegraph.context import CancelToken, NodeContext
    from nodegraph.device import DevicePolicy
    from nodes.diffusion.families import FAMILIES
    from nodes.diffusion.flux_runtime import FluxTextEncoder
    from nodes.diffusion.pack.flux import clip_text_encode_flux

    seen: list[int] = []

    class Probe(FluxTextEncoder):
        def encode_pair(self, clip_l: str, t5xxl: str, guidance: float) -> str:
            seen.append(torch.get_num_threads())
            return "cond"

    clip = Probe(torch.nn.Linear(8, 8), None, None, None, FAMILIES["flux-dev"], torch.device("cpu"))
    monkeypatch.delenv(ENV_VAR, raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for threads, want in ((3, 3), (None, 1)):  # the user's choice; else one thread for a tiny encoder
            settings = {} if threads is None else {"threads": threads}
            ctx = NodeContext("enc", "diffusion.clip_text_encode_flux", DevicePolicy("cpu"), tmp_path, CancelToken(),
                              settings)
            assert clip_text_encode_flux.fn(ctx, clip, "a", "b", 3.5) == "cond"
            assert seen[-1] == want and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
