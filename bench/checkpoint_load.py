"""Checkpoint load time and peak memory on a full-size SD1.5-layout file, beside same-run references.

Run: .venv/bin/python bench/checkpoint_load.py [--repeat 5] [--baseline DIR] [--file PATH]
     [--comfyui DIR [--comfyui-python PATH]]

Generates (once, outside the repo; never committed) a ~2 GB fp16 single-file checkpoint with random
weights in the exact SD1.5 key layout, warms the page cache, then loads it in fresh subprocesses
(``OMP_NUM_THREADS=1`` unless set), each round running every side once in alternating order:

* this checkout, keeping fp16 (memory-mapped; the <= 1.2x file target);
* this checkout, its CPU precision policy (``compute_dtype``: bf16 for a model this size on a CPU with
  native bf16 instructions, else fp32; the issue's <= 0.8x ComfyUI time is judged on this side);
* this checkout, fp32 forced (the issue's <= 1.1x fp32-weights peak; what every CPU without native bf16 gets);
* ``--comfyui DIR``: **ComfyUI itself**, from a ComfyUI checkout the user provides (nothing of ComfyUI is
  shipped or fetched here), run under ``--comfyui-python`` (an interpreter whose environment has ComfyUI's
  requirements; default: this one) with DIR on ``sys.path``: its CPU mode (``--cpu``, as ``main.py --cpu``
  parses it), then, timed, what its CheckpointLoaderSimple node runs --
  ``comfy.sd.load_checkpoint_guess_config(path, output_vae=True, output_clip=True)`` -- and what it runs
  before sampling, ``comfy.model_management.load_models_gpu`` on the model, CLIP and VAE patchers, so
  every weight is resident in the dtype ComfyUI keeps on CPU (UNet and VAE fp32, text encoder fp16 with
  casting at run time).  ``--comfyui-variant FLAGS`` adds a ComfyUI side started with more flags (e.g.
  ``--fp32-text-enc``, to upcast the text encoder as this checkout does).  After the clock stops, a few
  UNet, VAE and text-encoder tensors are compared with the file's (upcast) so the timing is of a real load.
  If that environment has no ``torchvision`` (which ComfyUI imports for models other than SD1.5), a
  stand-in module that raises when used is installed first;
* a **ComfyUI-style reconstruction** (runs without a ComfyUI checkout): ComfyUI's CPU path rebuilt with
  plain torch + safetensors -- ``safe_open``/``get_tensor`` for every key, the models built in fp32 with
  init skipped (this repo's module classes, same parameter layout), ``load_state_dict`` copying into them,
  ``.float()``, the CLIP tokenizer built;
* ``--baseline DIR``: another checkout's fp32 load (e.g. ``git archive main | tar -x -C DIR``);
* the floor: allocating and writing the fp32 weights' bytes alone (the kernel's fresh-memory cost that
  every eager fp32 load pays).

Each side reports wall time and process CPU (user + sys; the figure to compare on a shared machine),
page faults and peak RSS; then the ratios this checkout / each reference in the same run (ComfyUI's
among them with ``--comfyui``); without ``--comfyui``, this checkout's median beside ComfyUI's field
figure for the same file on this machine class (6.6 s warm, 6.3 GB peak; a different run, so no target
is claimed against it).
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

# Each child times one load and reports wall, process CPU (user + sys: on a shared machine the figure to
# compare), minor page faults and peak RSS.  argv: root, file, mode.
CHILD = r"""
import gc, json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import torch
mode = sys.argv[3]
if mode == "floor":
    from nodes.diffusion.models.loading import LazySafetensors
    n = sum(LazySafetensors(sys.argv[2])[k].numel() for k in LazySafetensors(sys.argv[2]))
elif mode == "comfy":
    import safetensors
    from nodes.diffusion.checkpoint import SD1_CLIP, UNET, VAE
    from nodes.diffusion.families import rules_for
    from nodes.diffusion.models.clip_text import ClipTextModel, infer_clip_config
    from nodes.diffusion.models.loading import build_on_meta
    from nodes.diffusion.models.unet import UNetModel
    from nodes.diffusion.models.unet_config import infer_unet_config
    from nodes.diffusion.models.vae import AutoencoderKL, infer_vae_config
    from nodes.diffusion.text.tokenizer import default_tokenizer
else:
    from nodes.diffusion.checkpoint import load_checkpoint
r0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.perf_counter()
if mode == "floor":
    # What the kernel charges for the fp32 weights' fresh memory alone: allocate and write n fp32 values.
    x = torch.empty(n, dtype=torch.float32)
    x.fill_(1.0)
    dtype = "float32 (fresh memory only)"
elif mode == "comfy":
    # ComfyUI-style reconstruction (NOT ComfyUI): its CPU path for a single-file checkpoint is
    # load_torch_file = safetensors safe_open + get_tensor per key (memory-mapped views), the model built in
    # fp32 with weight init disabled (comfy.ops.disable_weight_init: empty CPU tensors), then
    # load_state_dict(strict=False) copying (and converting) into the parameters; the CLIP object builds
    # its tokenizer.  Here with this repo's module classes (same parameter layout) built with init skipped.
    with safetensors.safe_open(sys.argv[2], framework="pt", device="cpu") as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}
    models = []
    for prefix, build in ((UNET, lambda s: build_on_meta(UNetModel, infer_unet_config(s, {}))),
                          (VAE, lambda s: build_on_meta(AutoencoderKL, infer_vae_config(s, 0.18215, 0.0))),
                          (SD1_CLIP, lambda s: build_on_meta(ClipTextModel, infer_clip_config(s, "quick_gelu")))):
        part = {k[len(prefix):]: sd.pop(k) for k in list(sd) if k.startswith(prefix)}
        m = build(part).to_empty(device="cpu")
        missing, _ = m.load_state_dict(part, strict=False)
        assert not missing, missing[:5]
        models.append(m.float().eval().requires_grad_(False))
        del part
    tok = default_tokenizer()
    dtype = str(next(models[0].parameters()).dtype)
else:
    forced = {"auto": None, "fp16": torch.float16, "fp32": torch.float32}[mode]
    ck = load_checkpoint(sys.argv[2], device="cpu", dtype=forced)
    models = [ck.model.unet, ck.vae.vae, *ck.clip.encoders]
    dtype = str(ck.model.dtype)
elapsed = time.perf_counter() - t0
r1 = resource.getrusage(resource.RUSAGE_SELF)
if mode != "floor":
    n = sum(p.numel() for m in models for p in m.parameters())
print(json.dumps({"seconds": elapsed, "cpu": r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime,
                  "sys": r1.ru_stime - r0.ru_stime, "minflt": r1.ru_minflt - r0.ru_minflt,
                  "peak_rss": r1.ru_maxrss * 1024, "params": n, "dtype": dtype}))
"""

# The ComfyUI side: ComfyUI's own code from a user's checkout, run under its own interpreter.
# argv: comfyui dir, file, then extra ComfyUI command-line flags.
COMFY_CHILD = r"""
import importlib.util, json, resource, sys, time, types
comfy_dir, path = sys.argv[1], sys.argv[2]
sys.path.insert(0, comfy_dir)
sys.argv = [sys.argv[0], "--cpu", *sys.argv[3:]]  # as `python main.py --cpu [flags]` starts it
if importlib.util.find_spec("torchvision") is None:
    # ComfyUI imports torchvision for Stable Cascade / Cosmos / ACE models, never on the SD1.5 path; stand in
    # for it with a module that raises when used (transformers imported first so it sees none).
    import transformers  # noqa: F401
    from transformers import CLIPTokenizer  # noqa: F401

    class _Absent(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return _Absent(f"{self.__name__}.{name}")

        def __call__(self, *a, **k):
            raise RuntimeError(f"{self.__name__}: torchvision is not installed (stand-in)")

    for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.models"):
        sys.modules[name] = _Absent(name)
import comfy.options
comfy.options.enable_args_parsing()
import comfy.cli_args
assert comfy.cli_args.args.cpu
import torch
import comfy.model_management as mm
import comfy.sd
assert mm.get_torch_device().type == "cpu"
r0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.perf_counter()
# What CheckpointLoaderSimple runs, then what ComfyUI runs before sampling/encoding/decoding: load the
# patchers onto the (CPU) device -- afterwards every weight is resident and ready to run.
model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(path, output_vae=True, output_clip=True,
                                                            embedding_directory=None)
mm.load_models_gpu([model, clip.patcher, vae.patcher])
elapsed = time.perf_counter() - t0
r1 = resource.getrusage(resource.RUSAGE_SELF)
parts = ((model.model.diffusion_model, "model.diffusion_model."), (vae.first_stage_model, "first_stage_model."),
         (clip.cond_stage_model.clip_l.transformer, "cond_stage_model.transformer."))
import safetensors
checked = 0
with safetensors.safe_open(path, framework="pt", device="cpu") as f:
    keys = set(f.keys())
    for module, prefix in parts:
        sd = module.state_dict()
        names = [k for k in sd if prefix + k in keys]
        assert len(names) > 0.9 * len(sd), (prefix, len(names), len(sd))
        for k in names[:: max(1, len(names) // 5)]:
            ref = f.get_tensor(prefix + k)
            assert torch.equal(sd[k].float(), ref.float()), prefix + k
            checked += 1
    unet_keys = [k for k in keys if k.startswith("model.diffusion_model.")]
    assert len(unet_keys) == len(model.model.diffusion_model.state_dict())
n = sum(p.numel() for m, _ in parts for p in m.parameters())


def _counts(module):
    out = {}
    for p in module.parameters():
        out[p.dtype] = out.get(p.dtype, 0) + p.numel()
    return out


print(json.dumps({"seconds": elapsed, "cpu": r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime,
                  "sys": r1.ru_stime - r0.ru_stime, "minflt": r1.ru_minflt - r0.ru_minflt,
                  "peak_rss": r1.ru_maxrss * 1024, "params": n, "checked": checked,
                  "dtype": ", ".join(f"{label} " + " + ".join(f"{str(t).replace('torch.', '')} {c / 1e6:.1f}M"
                                                                     for t, c in sorted(_counts(m).items(), key=str))
                                     for label, (m, _) in zip(("UNet", "VAE", "text encoder"), parts))}))
"""


def generate(path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    sys.path.insert(0, str(ROOT))
    from nodes.diffusion.models.clip_text import ClipTextConfig, ClipTextModel
    from nodes.diffusion.models.unet import UNetModel
    from nodes.diffusion.models.unet_config import UNetConfig
    from nodes.diffusion.models.vae import AutoencoderKL, VAEConfig

    unet_cfg = UNetConfig(in_channels=4, out_channels=4, model_channels=320, channel_mult=(1, 2, 4, 4),
                          num_res_blocks=(2, 2, 2, 2), transformer_depth=(1, 1, 1, 0), transformer_depth_middle=1,
                          transformer_depth_output=(1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0), context_dim=768,
                          use_linear_in_transformer=False, num_heads=8)
    with torch.device("meta"):
        parts = {"model.diffusion_model.": UNetModel(unet_cfg), "first_stage_model.": AutoencoderKL(VAEConfig()),
                 "cond_stage_model.transformer.": ClipTextModel(ClipTextConfig())}
    gen = torch.Generator().manual_seed(0)
    flat = {}
    for prefix, module in parts.items():
        for k, v in module.state_dict().items():
            flat[prefix + k] = (torch.randn(v.shape, generator=gen) * 0.02).to(torch.float16)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(flat, str(path))


POLICY, FP32 = "this checkout, CPU policy", "this checkout, fp32"
FIELD_SECONDS, FIELD_RSS = 6.6, 6.3  # ComfyUI on this machine class, same file (field figure, not this run)


def _loadavg() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _stats(xs: list[float]) -> tuple[float, float, float]:
    s = sorted(xs)
    return s[0], statistics.median(s), s[-1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--file", default="/tmp/nodegraph-bench/sd15-random-fp16.safetensors")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; every round runs each fp32 side once")
    ap.add_argument("--baseline", type=Path, metavar="DIR",
                    help="another checkout of the repo (e.g. `git archive main`) whose fp32 load is timed "
                         "alternately with this one's")
    ap.add_argument("--comfyui", type=Path, metavar="DIR",
                    help="a ComfyUI checkout whose own checkpoint loading is timed alternately with this one's")
    ap.add_argument("--comfyui-python", default=sys.executable, metavar="PATH",
                    help="interpreter whose environment has ComfyUI's requirements (default: this one)")
    ap.add_argument("--comfyui-variant", action="append", default=[], metavar="FLAGS",
                    help="with --comfyui: one more ComfyUI side started with these extra flags "
                         "(e.g. '--fp32-text-enc'); repeatable")
    ap.add_argument("--no-reference", action="store_true",
                    help="skip the ComfyUI-style reconstruction and the fresh-memory floor")
    ap.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    path = Path(args.file)
    if args.generate_only:
        generate(path)
        return
    if not path.exists():
        print(f"generating {path} (random weights, SD1.5 layout, fp16) …", flush=True)
        # In a child: a child process inherits its parent's peak-RSS mark, so the 2 GB this takes here
        # would show up as every load's peak.
        subprocess.run([sys.executable, __file__, "--file", str(path), "--generate-only"], check=True)
    size = path.stat().st_size
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"start {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load average {_loadavg()}, "
          f"{os.cpu_count()} cpu(s), OMP_NUM_THREADS={env['OMP_NUM_THREADS']} in every child, torch {_torch_version()}")
    print(f"file: {path} {size / 2**30:.2f} GiB")
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache

    def run(mode: str, root: Path = ROOT) -> dict:
        if mode.startswith("comfyui"):
            cmd = [args.comfyui_python, "-c", COMFY_CHILD, str(root), str(path), *mode.split()[1:]]
        else:
            cmd = [sys.executable, "-c", CHILD, str(root), str(path), mode]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode:
            raise SystemExit(f"{mode} load failed ({root}):\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    sides: dict[str, tuple[str, Path]] = {POLICY: ("auto", ROOT), FP32: ("fp32", ROOT)}
    if args.comfyui:
        sides["ComfyUI"] = ("comfyui", args.comfyui.resolve())
        for flags in args.comfyui_variant:
            sides[f"ComfyUI {flags}"] = (f"comfyui {flags}", args.comfyui.resolve())
    if not args.no_reference:
        sides["ComfyUI-style reconstruction, fp32"] = ("comfy", ROOT)
    if args.baseline:
        sides[f"baseline {args.baseline}, its policy"] = ("auto", args.baseline.resolve())
    if not args.no_reference:
        sides["floor: fresh fp32 memory alone"] = ("floor", ROOT)
    results: dict[str, list[dict]] = {"this checkout, kept fp16 (mmap)": []}
    results.update({name: [] for name in sides})
    items = list(sides.items())
    for r in range(args.repeat):
        results["this checkout, kept fp16 (mmap)"].append(run("fp16"))
        for name, (mode, root) in items if r % 2 == 0 else reversed(items):  # nobody always goes first
            results[name].append(run(mode, root))
    print(f"end {time.strftime('%H:%M:%S UTC', time.gmtime())}, load average {_loadavg()}")
    fp32 = results[FP32][0]["params"] * 4
    rows = []
    for name, runs in results.items():
        wall, cpu = _stats([x["seconds"] for x in runs]), _stats([x["cpu"] for x in runs])
        rss = max(x["peak_rss"] for x in runs)
        sys_med = statistics.median(x["sys"] for x in runs)
        flt = statistics.median(x["minflt"] for x in runs)
        print(f"{name:38s} wall min {wall[0]:.2f} median {wall[1]:.2f} max {wall[2]:.2f} s | process CPU min "
              f"{cpu[0]:.2f} median {cpu[1]:.2f} max {cpu[2]:.2f} s (sys {sys_med:.2f} s, {flt / 1e3:.0f}k minor "
              f"faults) | peak RSS {rss / 2**30:.2f} GiB = {rss / size:.2f}x file = {rss / fp32:.2f}x fp32 weights")
        rows.append({"metric": f"SD1.5-layout load, {name}", "median": wall[1], "min": wall[0], "max": wall[2],
                     "unit": "s", "cpu_median": cpu[1], "peak_rss": rss, "ratio": rss / fp32,
                     "reference": f"ratio = peak RSS / fp32 weights; process CPU median {cpu[1]:.2f} s",
                     "target": "peak RSS <= 1.1x fp32 weights" if name == FP32 else ""})
    print(f"fp32 weights: {fp32 / 2**30:.2f} GiB ({fp32 / 4e6:.0f}M params); peak RSS target <= 1.1x; "
          f"the CPU policy loaded {results[POLICY][-1]['dtype']}")
    ours = results[FP32]
    for mine in (POLICY, FP32):
        for name in sides:
            if name in (POLICY, FP32) or name.startswith("floor"):
                continue
            a, b = results[mine], results[name]
            wr = statistics.median(x["seconds"] for x in a) / statistics.median(x["seconds"] for x in b)
            cr = statistics.median(x["cpu"] for x in a) / statistics.median(x["cpu"] for x in b)
            paired = statistics.median(x["cpu"] / y["cpu"] for x, y in zip(a, b, strict=True))
            best = min(x["cpu"] for x in a) / min(x["cpu"] for x in b)
            print(f"ratio {mine} / {name} (same run): wall {wr:.3f}, process CPU {cr:.3f} (medians; "
                  f"per-round CPU ratios' median {paired:.3f}; min CPU / min CPU {best:.3f})")
            target = ""
            if mine == POLICY and (name == "ComfyUI" or (name.startswith("ComfyUI-style") and not args.comfyui)):
                target = "<= 0.8x ComfyUI" + ("" if name == "ComfyUI" else " (reconstruction standing in)")
            rows.append({"metric": f"load, {mine} / {name}", "median": wr, "unit": "x (wall)",
                         "cpu_ratio": cr, "target": target})
    if not args.no_reference:
        floor = statistics.median(x["cpu"] for x in results["floor: fresh fp32 memory alone"])
        print(f"floor share: fresh fp32 memory alone costs {floor:.2f} s CPU = "
              f"{floor / statistics.median(x['cpu'] for x in ours):.0%} of this checkout's fp32 load")
    if args.comfyui:
        print(f"ComfyUI: {_comfyui_version(args.comfyui)} under {args.comfyui_python}")
        for name in sides:
            if name.startswith("ComfyUI") and not name.startswith("ComfyUI-style"):
                last = results[name][-1]
                print(f"{name} side loaded {last['dtype']}; {last['checked']} tensors checked equal to the "
                      f"file's after each load")
        emit_summary("checkpoint_load", rows)
        return
    med = statistics.median(x["seconds"] for x in results[POLICY])
    print(f"No --comfyui checkout given: ComfyUI's field figure on this machine class for the same file is "
          f"{FIELD_SECONDS} s warm, peak RSS {FIELD_RSS} GB -> this checkout's median / field figure = "
          f"{med / FIELD_SECONDS:.2f} (different runs and conditions; give --comfyui DIR for a same-run ratio)")
    emit_summary("checkpoint_load", rows)


def _comfyui_version(root: Path) -> str:
    """What the given ComfyUI checkout is: its version file and, if it is a git work tree, its commit."""
    out = str(root)
    version = root / "comfyui_version.py"
    if version.exists():
        out += " " + version.read_text().split("__version__")[-1].strip(" =\"'\n")
    git = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    if git.returncode == 0:
        out += f" commit {git.stdout.strip()}"
    return out


def _torch_version() -> str:
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"], capture_output=True,
                         text=True)
    return out.stdout.strip() or "?"


if __name__ == "__main__":
    main()
