"""What the CPU precision policy buys: a full-size SD1.5 UNet step in fp32 vs bf16, same run.

Run: .venv/bin/python bench/cpu_precision.py [--rounds 2] [--steps 3] [--file PATH]
     [--comfyui DIR --comfyui-python PY]

On the random-weight SD1.5-layout file of ``bench/checkpoint_load.py`` (generated there, outside the
repo), each side loads the checkpoint in a fresh subprocess (``OMP_NUM_THREADS=1`` unless set) and
times ``--steps`` UNet forwards after one warm-up: batch 2 (a CFG pair), a 64x64 latent (512x512
pixels), 77 context tokens -- what one sampling step costs.  Sides, alternating order per round:

* this checkout, fp32 forced (``NODEGRAPH_CPU_PRECISION=fp32``: ComfyUI's CPU default);
* this checkout, its CPU policy (``auto``: bf16 for a model this size on a CPU with native bf16
  dot-product instructions, else fp32; the line says which it picked);
* ``--comfyui DIR``: ComfyUI itself (a user's checkout, run under ``--comfyui-python`` in ``--cpu``
  mode): ``load_checkpoint_guess_config`` + ``load_models_gpu``, then its UNet's forward on the same
  inputs.

Every side gets the same inputs (seeded), so the relative L2 difference of each side's output
to the fp32 side's is printed too: how far bf16 moves one step's prediction.  Random weights stand in
for a trained model's; the step's cost does not depend on the values.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._util import emit_summary  # noqa: E402

# Shared by both children: the inputs, the timing loop and the report.  ``forward(x, t, ctx)`` is
# defined by the side before this runs.
COMMON = r"""
import json, time, torch
g = torch.Generator().manual_seed(0)
x = torch.randn(2, 4, 64, 64, generator=g)
ts = torch.tensor([500.0, 500.0])
ctx = torch.randn(2, 77, 768, generator=g)
with torch.no_grad():
    out = forward(x, ts, ctx).float()
    times = []
    for _ in range(int(steps)):
        t0 = time.perf_counter()
        forward(x, ts, ctx)
        times.append(time.perf_counter() - t0)
torch.save(out, out_path)
print(json.dumps({"times": times, "dtype": dtype}))
"""

CHILD = r"""
import sys
root, path, steps, out_path = sys.argv[1:5]
sys.path.insert(0, root)
import torch
from nodes.diffusion.checkpoint import load_checkpoint
ck = load_checkpoint(path, device="cpu")
unet, dtype = ck.model.unet, str(ck.model.dtype)
def forward(x, ts, ctx):
    d = ck.model.dtype
    return unet(x.to(d), ts, ctx.to(d)).float()
""" + COMMON

COMFY_CHILD = r"""
import sys
comfy_dir, path, steps, out_path = sys.argv[1:5]
sys.path.insert(0, comfy_dir)
sys.argv = [sys.argv[0], "--cpu"]
import importlib.util, types
if importlib.util.find_spec("torchvision") is None:  # as bench/checkpoint_load.py: never used on this path
    import transformers  # noqa: F401
    from transformers import CLIPTokenizer  # noqa: F401

    class _Absent(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return _Absent(f"{self.__name__}.{name}")

    for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.models"):
        sys.modules[name] = _Absent(name)
import comfy.options
comfy.options.enable_args_parsing()
import torch
import comfy.model_management as mm
import comfy.sd
model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(path, output_vae=True, output_clip=True,
                                                            embedding_directory=None)
mm.load_models_gpu([model])
net = model.model.diffusion_model
dtype = str(next(net.parameters()).dtype)
def forward(x, ts, ctx):
    return net(x, timesteps=ts, context=ctx).float()
""" + COMMON


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--file", default="/tmp/nodegraph-bench/sd15-random-fp16.safetensors")
    ap.add_argument("--rounds", type=int, default=2, help="rounds; each runs every side once, in a fresh process")
    ap.add_argument("--steps", type=int, default=3, help="timed UNet forwards per side and round")
    ap.add_argument("--comfyui", type=Path, metavar="DIR", help="a ComfyUI checkout to time beside this one")
    ap.add_argument("--comfyui-python", default=sys.executable, metavar="PATH")
    args = ap.parse_args()
    path = Path(args.file)
    if not path.exists():
        print(f"generating {path} via bench/checkpoint_load.py …", flush=True)
        subprocess.run([sys.executable, str(ROOT / "bench" / "checkpoint_load.py"), "--file", str(path),
                        "--generate-only"], check=True)
    base = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    ours = [sys.executable, "-c", CHILD, str(ROOT)]
    sides = {"this checkout, fp32": (ours, {"NODEGRAPH_CPU_PRECISION": "fp32"}),
             "this checkout, CPU policy": (ours, {"NODEGRAPH_CPU_PRECISION": "auto"})}
    if args.comfyui:
        sides["ComfyUI"] = ([args.comfyui_python, "-c", COMFY_CHILD, str(args.comfyui.resolve())], {})
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"start {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load average "
          f"{' / '.join(f'{v:.2f}' for v in os.getloadavg())}, {os.cpu_count()} cpu(s), "
          f"OMP_NUM_THREADS={base['OMP_NUM_THREADS']} in every child")
    out_dir = Path("/tmp/nodegraph-bench/cpu_precision")
    out_dir.mkdir(parents=True, exist_ok=True)
    times: dict[str, list[float]] = {name: [] for name in sides}
    dtypes: dict[str, str] = {}
    items = list(sides.items())
    for r in range(args.rounds):
        for name, (cmd, extra) in items if r % 2 == 0 else reversed(items):
            out_path = out_dir / f"side{list(sides).index(name)}.pt"
            res = subprocess.run([*cmd, str(path), str(args.steps), str(out_path)], capture_output=True, text=True,
                                 env={**base, **extra})
            if res.returncode:
                raise SystemExit(f"{name} failed:\n{res.stderr[-3000:]}")
            rep = json.loads(res.stdout.strip().splitlines()[-1])
            times[name] += rep["times"]
            dtypes[name] = rep["dtype"]
    import torch

    outputs = {name: torch.load(out_dir / f"side{list(sides).index(name)}.pt") for name in sides}
    ref = outputs["this checkout, fp32"]
    rows = []
    base_med = statistics.median(times["this checkout, fp32"])
    for name in sides:
        med = statistics.median(times[name])
        rel = ((outputs[name] - ref).norm() / ref.norm()).item()
        print(f"{name:28s} {dtypes[name]:15s} UNet step (batch 2, 64x64) median {med:.2f} s "
              f"(min {min(times[name]):.2f}, max {max(times[name]):.2f}, n={len(times[name])}) = "
              f"{med / base_med:.2f}x fp32; output vs fp32: relative L2 {rel:.2e}")
        rows.append({"metric": f"SD1.5 UNet step, {name}", "median": med, "unit": "s", "ratio": med / base_med,
                     "reference": "this checkout, fp32 (ComfyUI's CPU precision)"})
    if args.comfyui:
        policy, comfy = statistics.median(times["this checkout, CPU policy"]), statistics.median(times["ComfyUI"])
        print(f"ratio this checkout's CPU policy / ComfyUI (same run): {policy / comfy:.2f}")
    print(f"end {time.strftime('%H:%M:%S UTC', time.gmtime())}")
    emit_summary("cpu_precision", rows)


if __name__ == "__main__":
    main()
