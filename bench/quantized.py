"""Weights kept quantized + streamed under a device budget: time and peak RSS of one forward.

Run: .venv/bin/python bench/quantized.py [--depth 12] [--width 1024] [--repeat 3]
     .venv/bin/python bench/quantized.py --model sd15 --repeat 1   (full-size SD1.5 UNet, one step)
     .venv/bin/python bench/quantized.py --model flux --flux-depth 3,6 --repeat 0
         (FLUX.1-layout transformer at full width 3072; --flux-depth 19,38 is the full model)

Builds (on the meta device, then random weights) a transformer-style MLP stack
(``--depth`` residual blocks of width ``--width``, 4x hidden; ~400 MB in fp32 by
default), writes it once to /tmp as fp32 safetensors, fp8 e4m3fn safetensors
(ComfyUI "scaled fp8" layout: per-tensor ``scale_weight``) and GGUF Q8_0, then
runs each storage with device budgets of 25 %, 50 % and 100 % of its own size
in a fresh subprocess: load, register with the memory manager on the emulated
device, one warm-up forward, ``--repeat`` timed forwards.

What the figures mean on this CPU-only machine: the "device" is emulated, so
device copies are CPU clones and peak RSS counts both pools (home + device);
the accounted device peak is the manager's own figure (≤ the budget).  The
relative error is against the fp32, fully resident output of the same run.
Each row runs alone with one thread; other engineers' jobs share the 2 cores,
so compare rows of one run, never absolute times across runs.
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

from bench._util import emit_summary, machine  # noqa: E402

CACHE = Path(os.environ.get("TMPDIR", "/tmp")) / "nodegraph-bench-quantized"
STORAGES = ("fp32", "fp8_scaled", "q8_0")
BUDGETS = (0.25, 0.5, 1.0)
TOKENS, IO = 128, 256


def make_net(depth: int, width: int):
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(width)
            self.fc1 = nn.Linear(width, 4 * width)
            self.fc2 = nn.Linear(4 * width, width)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(x))))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Linear(IO, width)
            self.blocks = nn.ModuleList(Block() for _ in range(depth))
            self.out = nn.Linear(width, IO)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = self.inp(x)
            for b in self.blocks:
                t = b(t)
            return self.out(t)

    with torch.device("meta"):
        return Net()


def sd15_unet():
    """A full-size SD1.5-layout UNet on meta (859 M parameters, 3.2 GiB in fp32)."""
    import torch

    from nodes.diffusion.models.unet import UNetModel
    from nodes.diffusion.models.unet_config import UNetConfig

    cfg = UNetConfig(in_channels=4, out_channels=4, model_channels=320, channel_mult=(1, 2, 4, 4),
                     num_res_blocks=(2, 2, 2, 2), transformer_depth=(1, 1, 1, 0), transformer_depth_middle=1,
                     transformer_depth_output=(1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0), context_dim=768,
                     use_linear_in_transformer=False, num_heads=8)
    with torch.device("meta"):
        return UNetModel(cfg)


def flux_config(args: argparse.Namespace):
    """FLUX.1-dev's shapes (width 3072, 24 heads, T5 4096, CLIP 768) with ``--flux-depth`` double,single blocks."""
    from nodes.diffusion.models.flux import FluxConfig

    double, single = (int(n) for n in args.flux_depth.split(","))
    return FluxConfig(depth=double, depth_single_blocks=single)


def make_model(args: argparse.Namespace):
    if args.model == "flux":
        import torch

        from nodes.diffusion.models.flux import FluxTransformer

        with torch.device("meta"):
            return FluxTransformer(flux_config(args))
    return sd15_unet() if args.model == "sd15" else make_net(args.depth, args.width)


def model_blocks(args: argparse.Namespace, model) -> list | None:
    """What streams: the MLP's blocks (the default), or every UNet block incl. the middle one
    (its 97 M parameters would otherwise sit in the always-resident part)."""
    if args.model == "sd15":
        return [*model.input_blocks, model.middle_block, *model.output_blocks]
    return None


def model_inputs(args: argparse.Namespace) -> tuple:
    import torch

    g = torch.Generator().manual_seed(1)
    if args.model == "flux":  # one denoising step at 256x256: 16x16 patches = 256 image tokens + 256 T5 tokens
        return (torch.randn(1, 16, 32, 32, generator=g), torch.tensor([0.75]), torch.randn(1, 256, 4096, generator=g),
                torch.randn(1, 768, generator=g), torch.tensor([3.5]))
    if args.model == "sd15":  # one denoising step's UNet call: latent 32x32 (256 px), batch 1
        return torch.randn(1, 4, 32, 32, generator=g), torch.tensor([500.0]), torch.randn(1, 77, 768, generator=g)
    return (torch.randn(1, TOKENS, IO, generator=g),)


def paths(args: argparse.Namespace) -> dict[str, Path]:
    if args.model == "flux":
        stem = f"flux-d{args.flux_depth.replace(',', '-')}"
        return {"fp8_scaled": CACHE / f"{stem}-fp8.safetensors", "q8_0": CACHE / f"{stem}-q8_0.gguf"}
    stem = "sd15-unet" if args.model == "sd15" else f"net-d{args.depth}-w{args.width}"
    return {"fp32": CACHE / f"{stem}-fp32.safetensors", "fp8_scaled": CACHE / f"{stem}-fp8.safetensors",
            "q8_0": CACHE / f"{stem}-q8_0.gguf"}


def generate(args: argparse.Namespace) -> None:
    import torch
    from safetensors.torch import save_file

    from nodes.diffusion.quant.gguf_write import write_gguf

    files = paths(args)
    if all(p.exists() for p in files.values()):
        return
    if args.model == "flux":
        generate_flux(args, files)
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    sd = {}
    for key, t in make_model(args).state_dict().items():
        scale = t[0].numel() ** -0.5 if t.ndim >= 2 else 0.1
        sd[key] = torch.randn(t.shape, generator=g) * scale + (1.0 if key.endswith("norm.weight") else 0.0)
    save_file(sd, str(files["fp32"]))
    fp8 = {}
    for key, t in sd.items():
        if t.ndim >= 2:
            s = t.abs().max() / torch.finfo(torch.float8_e4m3fn).max
            fp8[key] = (t / s).to(torch.float8_e4m3fn)
            fp8[key[: -len("weight")] + "scale_weight"] = s.reshape(())
        else:
            fp8[key] = t
    fp8["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    save_file(fp8, str(files["fp8_scaled"]))
    write_gguf(files["q8_0"], {k: v.numpy() for k, v in sd.items()}, 8)


class _LazyWeights(dict):
    """Random weights made one tensor at a time when the writer asks (a full FLUX.1 in fp32 is 48 GB);
    the same key always gives the same tensor (seeded by its position)."""

    def __init__(self, shapes: dict) -> None:
        super().__init__(shapes)
        self.order = {k: i for i, k in enumerate(shapes)}

    def tensor(self, key: str):  # noqa: ANN201
        import torch

        shape = dict.__getitem__(self, key)
        g = torch.Generator().manual_seed(self.order[key])
        scale = shape[1:].numel() ** -0.5 if len(shape) >= 2 else 0.1
        return torch.randn(shape, generator=g) * scale + (1.0 if key.endswith(("norm.scale", "norm.weight")) else 0.0)

    def items(self):  # noqa: ANN201
        return ((k, self.tensor(k).numpy()) for k in self)


def generate_flux(args: argparse.Namespace, files: dict[str, Path]) -> None:
    """Write the FLUX.1-layout transformer as ComfyUI scaled fp8 and as GGUF Q8_0, tensor by tensor."""
    import torch
    from safetensors.torch import save_file

    from nodes.diffusion.quant.gguf_write import write_gguf

    CACHE.mkdir(parents=True, exist_ok=True)
    weights = _LazyWeights({k: t.shape for k, t in make_model(args).state_dict().items()})
    fp8: dict[str, torch.Tensor] = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    for key in weights:
        t = weights.tensor(key)
        if t.ndim >= 2:
            s = t.abs().max() / torch.finfo(torch.float8_e4m3fn).max
            fp8[key], fp8[key[: -len("weight")] + "scale_weight"] = (t / s).to(torch.float8_e4m3fn), s.reshape(())
        else:
            fp8[key] = t
    save_file(fp8, str(files["fp8_scaled"]))
    del fp8
    write_gguf(files["q8_0"], weights, 8, arch="flux")


def _rss_peak() -> int:
    """This process's peak RSS (VmHWM).  Not ``ru_maxrss``: Linux carries that across exec from the
    parent, so a child started by a big parent would report the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(1)
    from nodes.diffusion.memory import ComputeDevice, MemoryManager
    from nodes.diffusion.models.loading import assign_weights, load_state_dict
    from nodes.diffusion.quant.gguf_file import read_gguf
    from nodes.diffusion.quant.layers import load_quantized

    path = paths(args)[args.storage]
    baseline = _rss_peak()  # interpreter + torch, before any weight
    t0 = time.perf_counter()
    meta = make_model(args) if args.model != "flux" else None
    if args.model == "flux":  # through the loader node's code: architecture from the file's shapes
        from nodes.diffusion.split_files import load_diffusion_model_file

        model = load_diffusion_model_file(path).transformer
    elif args.storage == "fp32":
        model = assign_weights(meta, load_state_dict(path)[0], name=str(path))
    elif args.storage == "q8_0":
        model = load_quantized(meta, read_gguf(path).state_dict, name=str(path))
    else:
        model = load_quantized(meta, load_state_dict(path)[0], name=str(path))
    load_s = time.perf_counter() - t0
    size = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    # flux rows: as the executor's manager does on a device without asynchronous copies (no prefetch window)
    mm = MemoryManager(ComputeDevice.emulated_device(), int(size * args.budget), prefetch=args.model != "flux")
    handle = mm.register("net", model, blocks=model_blocks(args, model))
    inputs = model_inputs(args)
    times = []
    with torch.inference_mode():
        # --repeat 0: one cold call, timed (the first touch of the memory-mapped file included)
        for i in range(args.repeat + 1 if args.repeat else 1):
            t0 = time.perf_counter()
            with mm.use(handle) as net:
                y = net(*inputs)
            if i or not args.repeat:
                times.append(time.perf_counter() - t0)
    torch.save(y, args.out)
    print(json.dumps({"load_s": load_s, "median_s": statistics.median(times), "min_s": min(times),
                      "max_s": max(times), "peak_rss": _rss_peak(),
                      "baseline_rss": baseline,
                      "model_bytes": size, "budget": mm.budget, "device_peak": mm.peak,
                      "streamed": len(handle.streamed), "blocks": len(handle.blocks)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flux-depth", default="3,6", help="flux: double,single block counts (FLUX.1: 19,38); with "
                    "fewer than 3 double blocks one block is too large a share for a 25 %% budget")
    ap.add_argument("--model", choices=("mlp", "sd15", "flux"), default="mlp",
                    help="mlp: the residual MLP stack; sd15: a full-size SD1.5-layout UNet (3.2 GiB fp32 file, "
                         "~7 GiB peak RSS at 100 %% on the emulated device, minutes per row)")
    ap.add_argument("--depth", type=int, default=12)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--storage", choices=STORAGES, help=argparse.SUPPRESS)
    ap.add_argument("--budget", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    import torch

    t0 = time.perf_counter()
    generate(args)
    print(f"{machine()}; load average {os.getloadavg()[0]:.1f} (shared machine); files ready in "
          f"{time.perf_counter() - t0:.0f} s in {CACHE}")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    results, reference, own_refs = {}, None, {}
    for storage in (("fp8_scaled", "q8_0") if args.model == "flux" else STORAGES):
        for budget in sorted(BUDGETS, reverse=True):
            out = CACHE / f"out-{storage}-{budget}.pt"
            cmd = [sys.executable, __file__, "--child", "--storage", storage, "--budget", str(budget),
                   "--model", args.model, "--depth", str(args.depth), "--width", str(args.width),
                   "--flux-depth", args.flux_depth,
                   "--repeat", str(args.repeat),
                   "--out", str(out)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
            if proc.returncode:
                sys.exit(f"{storage} @ {budget:.0%} failed:\n{proc.stderr}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            y = torch.load(out)
            reference = y if reference is None else reference
            r["rel_err"] = float((y - reference).abs().max() / reference.abs().max())
            own = own_refs.setdefault(storage, y)  # the same storage at 100 %: streaming must not change a bit
            r["bitwise_equal_to_100"] = bool(torch.equal(y, own))
            results[(storage, budget)] = r
            print(f"{storage:>10} budget {budget:>4.0%}: forward median {r['median_s']:.3f} s "
                  f"(min {r['min_s']:.3f}, max {r['max_s']:.3f}); load {r['load_s']:.2f} s; "
                  f"peak RSS {r['peak_rss'] / 2**20:.0f} MiB (+{(r['peak_rss'] - r['baseline_rss']) / 2**20:.0f} over "
                  f"imports); model {r['model_bytes'] / 2**20:.0f} MiB; "
                  f"device peak {r['device_peak'] / 2**20:.0f} / {r['budget'] / 2**20:.0f} MiB; "
                  f"streamed {r['streamed']}/{r['blocks']} blocks; rel. err vs first row {r['rel_err']:.2e}; "
                  f"bitwise equal to its 100 % row: {r['bitwise_equal_to_100']}")
    base = results[("fp32", 1.0)] if ("fp32", 1.0) in results else next(iter(results.values()))
    rows = []
    for (storage, budget), r in results.items():
        rows.append({"metric": f"forward, {storage}, budget {budget:.0%}", "median": r["median_s"], "min": r["min_s"],
                     "max": r["max_s"], "unit": "s",
                     "reference": "fp8 scaled, fully resident" if args.model == "flux" else "fp32 fully resident",
                     "ratio": r["median_s"] / base["median_s"],
                     "peak_rss_mib": r["peak_rss"] / 2**20,
                     "rss_over_imports_mib": (r["peak_rss"] - r["baseline_rss"]) / 2**20})
    emit_summary(f"quantized-{args.model}", rows)


if __name__ == "__main__":
    main()
