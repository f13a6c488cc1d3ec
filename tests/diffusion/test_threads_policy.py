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
