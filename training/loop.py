"""The training loop the UNet, FLUX and SD3 demo trainers share: options, resume, LR, budget, EMA, cadence.

Each trainer (:mod:`training.train_unet`, :mod:`training.train_flux`, :mod:`training.train_sd3`)
keeps what belongs to its family -- models, batches, loss, evaluations -- and hands the rest
to :class:`Trainer`.  The parts live in one place because they are what makes a run resumable
and comparable across families, and three copies had already drifted once (``--new-cycle``
read the cosine progress from the absolute step in two of them; training/README.md):

* **Resume** (:meth:`Trainer.resume`): a state file with optimizer state continues the
  interrupted run exactly (optimizer moments, the torch generator, the warm-up origin, the
  elapsed time).  One without it (``python -m training.restore`` writes the shipped UNet
  weights that way), or ``--new-cycle``, keeps the weights and starts a new optimizer, warm-up
  and cosine cycle that counts its steps from the resume step (``warm_from``).
* **Budget and LR** (:func:`progress`, :func:`learning_rate`): the cosine progress is the larger
  of the cycle's steps over ``--steps`` and the elapsed time over ``--minutes`` (0 = no time
  limit), so either can end a run; ``--steps`` is also the absolute step a run stops at, resumed
  or not.  The LR warms up linearly over the cycle's first ``warmup`` steps, then follows a
  cosine from 1 to 0.1 x ``--lr``.
* **Step** (:meth:`Trainer.run`): AdamW (weight decay 0.01, betas 0.9/0.99), gradients clipped
  to norm 1, EMA with decay ``min(--ema, (1 + step) / (10 + step))`` (so the EMA of a young run
  is not dominated by its random initial weights), a running loss (0.98 smoothing) logged every
  ``log_every`` steps, the state saved every ``save_every`` steps and at the end, evaluations
  every ``--eval-every`` steps and at the end.  Saves are atomic (a temporary file, then a
  rename), so a run killed mid-save keeps its previous state.

The arithmetic is the trainers' former inline code, unchanged: the state files keep their keys
and the runs are bit-identical to those of the code before this module.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from training.common import Timer, load_work, log, setup_torch, work_dir


def add_run_args(ap: argparse.ArgumentParser, *, steps: int, minutes: float, batch: int, lr: float, data: int,
                 threads: int) -> None:
    """The options of every demo trainer (budget, batch, LR, data set size, threads, seed), with its own defaults."""
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--minutes", type=float, default=minutes)
    ap.add_argument("--batch", type=int, default=batch)
    ap.add_argument("--lr", type=float, default=lr)
    ap.add_argument("--data", type=int, default=data)
    ap.add_argument("--threads", type=int, default=threads)
    ap.add_argument("--seed", type=int, default=0)


def add_common_args(ap: argparse.ArgumentParser, *, steps: int, minutes: float, lr: float, data: int,
                    eval_every: int, threads: int) -> None:
    """:func:`add_run_args` and the options :class:`Trainer` reads; the defaults are each trainer's own."""
    add_run_args(ap, steps=steps, minutes=minutes, batch=32, lr=lr, data=data, threads=threads)
    ap.add_argument("--ema", type=float, default=0.995)
    ap.add_argument("--eval-every", type=int, default=eval_every)
    ap.add_argument("--edge-weight", type=float, default=4.0,
                    help="extra loss weight on latent pixels along the object's outline (0 = plain MSE)")
    ap.add_argument("--new-cycle", action="store_true",
                    help="keep the saved weights but start a fresh optimizer, warm-up and cosine cycle "
                    "(its progress counts steps from the resume point; --steps stays the last step)")


def parse_or_run_files(ap: argparse.ArgumentParser, *, evaluate_files: Callable[[], None],
                       export: Callable[[], None]) -> argparse.Namespace | None:
    """Parse the options and pin the thread count; for a trainer with ``--evaluate`` (grade the shipped
    files through the app's loaders) and ``--export`` (write them from the saved EMA weights), run
    those instead of training and return None.  The work folder is created (private) unless only
    grading, which reads no training state."""
    args = ap.parse_args()
    setup_torch(args.threads)
    if args.evaluate:
        evaluate_files()
        return None
    work_dir()
    if args.export:
        export()
        return None
    return args


def progress(step: int, warm_from: int, steps: int, elapsed: float, minutes: float) -> float:
    """Cosine progress in [0, 1+): steps of this cycle over ``--steps`` or time over ``--minutes``, the larger."""
    return max((step - warm_from) / steps, elapsed / (60 * minutes) if minutes else 0.0)


def learning_rate(base: float, step: int, warm_from: int, warmup: int, frac: float) -> float:
    """Linear warm-up over ``warmup`` steps of the cycle, then cosine from ``base`` down to 0.1 x ``base``."""
    return base * min(1.0, (step - warm_from + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


class Trainer:
    """Optimizer, generator, step counter and state file of one run (see the module docstring).

    ``modules`` maps the state file's keys to the modules saved and resumed under them (live and
    EMA weights); ``params`` are the trained parameters; ``extra`` is saved beside them (latent
    normalisation and such, which the exporters read).  Create it after the modules are
    initialised and seeded, with the ``timer`` started before the data was prepared (the time
    budget counts that too); then :meth:`resume`, then :meth:`run`.
    """

    def __init__(self, args: argparse.Namespace, ckpt: Path, modules: dict[str, torch.nn.Module],
                 params: list[torch.nn.Parameter], timer: Timer, *, warmup: int, log_every: int, save_every: int,
                 extra: dict | None = None) -> None:
        self.args, self.ckpt, self.modules, self.params, self.timer = args, ckpt, modules, params, timer
        self.warmup, self.log_every, self.save_every = warmup, log_every, save_every
        self.extra = extra or {}
        self.opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
        self.gen = torch.Generator().manual_seed(args.seed)
        self.step = self.warm_from = 0

    def resume(self) -> None:
        """Load the state file if there is one: continue its run, or start a new cycle from its weights."""
        if not self.ckpt.exists():
            return
        s = load_work(self.ckpt)
        for key, module in self.modules.items():
            module.load_state_dict(s[key])
        fresh = "opt" not in s or self.args.new_cycle
        if not fresh:  # an interrupted run: continue it exactly
            self.opt.load_state_dict(s["opt"])
            self.gen.set_state(s["gen"])
            self.warm_from = s.get("warm_from", 0)
        else:  # restored from shipped weights, or --new-cycle: new optimizer, new warm-up and cosine cycle
            self.warm_from = s["step"]
        self.step, self.timer = s["step"], Timer(0.0 if fresh else s["elapsed"])
        log(f"resumed at step {self.step}" + (" with a fresh optimizer and LR cycle" if fresh else ""))

    def save(self) -> None:
        tmp = self.ckpt.with_suffix(".tmp")
        torch.save({**{k: m.state_dict() for k, m in self.modules.items()}, "opt": self.opt.state_dict(),
                    "gen": self.gen.get_state(), "step": self.step, "elapsed": self.timer.elapsed,
                    "warm_from": self.warm_from, **self.extra}, tmp)  # fmt: skip
        tmp.replace(self.ckpt)

    def run(self, loss: Callable[[], torch.Tensor], evaluate: Callable[[], None],
            ema_pairs: Iterable[tuple[torch.nn.Module, torch.nn.Module]], *,
            after_backward: Callable[[], None] | None = None, after_step: Callable[[], None] | None = None,
            log_suffix: Callable[[], str] | None = None) -> None:
        """Train until ``--steps`` or ``--minutes`` ends the cycle, then save and evaluate once more.

        ``loss()`` draws a batch (from the trainer's generators) and returns its loss with the graph;
        ``after_backward`` edits gradients (the cut-off latent channels), ``after_step`` weights;
        ``ema_pairs`` are the (EMA, live) modules averaged after each step.
        """
        args, opt = self.args, self.opt
        ema_pairs = list(ema_pairs)
        running = None
        while self.step < args.steps:
            frac = progress(self.step, self.warm_from, args.steps, self.timer.elapsed, args.minutes)
            if frac >= 1.0:
                break
            lr = learning_rate(args.lr, self.step, self.warm_from, self.warmup, frac)
            for g in opt.param_groups:
                g["lr"] = lr
            batch_loss = loss()
            opt.zero_grad(set_to_none=True)
            batch_loss.backward()
            if after_backward is not None:
                after_backward()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            opt.step()
            if after_step is not None:
                after_step()
            self.step += 1
            decay = min(args.ema, (1 + self.step) / (10 + self.step))
            with torch.no_grad():
                for ema, live in ema_pairs:
                    for e, p in zip(ema.parameters(), live.parameters(), strict=True):
                        e.lerp_(p, 1 - decay)
            value = float(batch_loss.detach())
            running = value if running is None else 0.98 * running + 0.02 * value
            if self.step % self.log_every == 0:
                log(f"step {self.step} loss {running:.4f} lr {lr:.2e} elapsed {self.timer.elapsed / 60:.1f} min"
                    + (log_suffix() if log_suffix else ""))
            if self.step % self.save_every == 0:
                self.save()
            if self.step % args.eval_every == 0:
                evaluate()
        self.save()
        evaluate()
        log(f"done: {self.step} steps, {self.timer.elapsed / 60:.1f} min")
