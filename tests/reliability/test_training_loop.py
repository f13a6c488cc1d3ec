"""The shared training loop (training/loop.py): an interrupted run resumes exactly; --new-cycle restarts the LR.

A tiny regression stands in for a diffusion model: its batches come from the trainer's own torch
generator, which the state file carries, so a resumed run must reproduce the weights, EMA and
optimizer moments of one that never stopped, to the bit.
"""

from __future__ import annotations

import argparse
import os

import pytest
import torch

from training.common import Timer
from training.loop import Trainer, add_common_args

TRUE_W = torch.tensor([[1.5, -2.0, 0.5]])


class Interrupted(Exception):
    pass


def parse(*argv: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    add_common_args(ap, steps=100, minutes=0.0, lr=1e-2, data=10, eval_every=1000, threads=1)
    return ap.parse_args(["--minutes", "0", *argv])


def run(folder, args, stop_at: int | None = None, lrs: list[float] | None = None):
    """One invocation of a trainer: build, resume from ``folder``, train; ``stop_at`` kills it mid-run."""
    torch.manual_seed(args.seed)
    model = torch.nn.Linear(3, 1)
    ema = torch.nn.Linear(3, 1).requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    trainer = Trainer(args, folder / "toy.pt", {"model": model, "ema": ema}, list(model.parameters()), Timer(),
                      warmup=5, log_every=4, save_every=4, extra={"note": "toy"})
    trainer.resume()

    def loss() -> torch.Tensor:
        if trainer.step == stop_at:
            raise Interrupted
        if lrs is not None:
            lrs.append(trainer.opt.param_groups[0]["lr"])
        x = torch.randn(8, 3, generator=trainer.gen)
        y = x @ TRUE_W.T + 0.1 * torch.randn(8, 1, generator=trainer.gen)
        return torch.nn.functional.mse_loss(model(x), y)

    try:
        trainer.run(loss, lambda: None, [(ema, model)])
    except Interrupted:
        pass
    return trainer


@pytest.fixture
def private(tmp_path):
    def make(name):
        folder = tmp_path / name
        folder.mkdir(mode=0o700)
        os.chmod(folder, 0o700)
        return folder

    return make


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in ("model", "ema"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    for pid, st in a["opt"]["state"].items():
        for k, v in st.items():
            assert torch.equal(v, b["opt"]["state"][pid][k]), (pid, k)
    assert torch.equal(a["gen"], b["gen"])
    assert (a["step"], a["warm_from"], a["note"]) == (b["step"], b["warm_from"], b["note"])


def test_interrupted_run_resumes_bit_identically(private):
    whole, parts = private("whole"), private("parts")
    args = parse("--steps", "20")
    run(whole, args)
    stopped = run(parts, args, stop_at=10)  # killed at step 10: the last save was at step 8
    assert stopped.step == 10 and torch.load(parts / "toy.pt", weights_only=False)["step"] == 8
    resumed = run(parts, args)
    assert resumed.step == 20
    a, b = (torch.load(f / "toy.pt", weights_only=False) for f in (whole, parts))
    assert_same_state(a, b)
    assert a["step"] == 20 and a["warm_from"] == 0


def test_new_cycle_restarts_warmup_and_counts_steps_from_the_resume_point(private):
    folder = private("cycle")
    first: list[float] = []
    run(folder, parse("--steps", "12"), lrs=first)
    assert len(first) == 12
    second: list[float] = []
    trainer = run(folder, parse("--steps", "22", "--new-cycle"), lrs=second)
    # --steps is the last step (absolute): 10 more
    assert trainer.step == 22 and trainer.warm_from == 12 and len(second) == 10
    assert torch.load(folder / "toy.pt", weights_only=False)["warm_from"] == 12
    # the new cycle warms up again from the first step's LR, as the first cycle did
    assert second[0] == pytest.approx(first[0], rel=1e-12) and second[0] < second[4]
    # its cosine progress counts from the resume point (10 of 22 steps: not yet half-way down), where
    # the absolute step (22 of 22) would have put it at the end of the cycle (0.1 x --lr)
    assert second[-1] > 0.5 * max(second) > 0.1 * 1e-2
    # and the optimizer was new: its step count restarted with the cycle
    opt_state = torch.load(folder / "toy.pt", weights_only=False)["opt"]["state"]
    assert all(float(s["step"]) == 10 for s in opt_state.values())


def test_a_state_without_optimizer_starts_a_new_cycle(private):
    """What ``training.restore`` writes (shipped weights, no optimizer): resumed weights, fresh cycle."""
    folder = private("restored")
    sd = {"weight": torch.full((1, 3), 10.0), "bias": torch.full((1,), 10.0)}  # far from any fresh init
    torch.save({"model": sd, "ema": sd, "step": 500, "elapsed": 0.0}, folder / "toy.pt")
    lrs: list[float] = []
    trainer = run(folder, parse("--steps", "506"), lrs=lrs)
    assert trainer.step == 506 and trainer.warm_from == 500 and len(lrs) == 6
    assert lrs[0] == pytest.approx(1e-2 / 5, rel=1e-12)  # warm-up from its first step: 1/warmup of --lr
    # the shipped weights were loaded (6 steps of LR <= 1e-2 cannot move them far from 10)
    assert all((p - 10.0).abs().max() < 1.0 for p in trainer.modules["model"].parameters())
