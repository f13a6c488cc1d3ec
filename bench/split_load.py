"""Load time and peak memory of a split-file set (diffusion model, text encoders, 16-channel VAE) vs the
files' size, for FLUX.1, SD3.5 and Z-Image.

Run: .venv/bin/python bench/split_load.py [--family flux|sd3|zimage] [--dir DIR] [--repeat 3] [--blocks N]

Generates once per family, outside the repo (never committed, default /tmp/nodegraph-bench/<family>-split),
random weights in the real layouts at full width but only a few blocks (the full models exceed this
machine's RAM several times over in the subprocess-per-run scheme), stored as the releases store them:

* ``flux``: FLUX.1-dev transformer (hidden 3072, guidance embedding; ``--double``/``--single`` blocks,
  bf16) + CLIP-L (fp16) + T5-XXL width, 2 layers (fp16) + ``ae`` (fp32);
* ``sd3``: SD3.5-large MMDiT (hidden 2432, 38 heads, qk-norm, 192² position table; ``--blocks`` joint
  blocks, bf16) + CLIP-L + OpenCLIP bigG (fp16) + T5-XXL width, 2 layers (fp16) + the 16-channel VAE (fp32);
* ``zimage``: Z-Image DiT (dim 3840; ``--blocks`` main layers + 1 noise and 1 context refiner, bf16) +
  Qwen3-4B width, 2 layers (bf16) + ``ae`` (fp32).

No tokenizer file is written: the T5 and Qwen3 tokenizers are nodegraph's built-in ones, as for a user
who downloads only the weights.  Each mode loads the set in fresh subprocesses through the loaders the
nodes use and reports wall time and peak RSS right after loading and after one real use (a prompt
encoded, one transformer step on a 256x256 image, one VAE decode), against the sum of the file sizes:

* ``default``: weights kept as stored (bf16/fp16, memory-mapped), upcast per layer;
* ``fp8_e4m3fn``: the transformer's matrices converted to fp8 at load (resident 1 byte each);
* an fp8 file (matrices stored in float8_e4m3fn) loaded with ``default``: kept as stored.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._util import emit_summary, machine  # noqa: E402

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(1)
from pathlib import Path
from nodes.diffusion.checkpoint import load_vae_file
from nodes.diffusion import split_files as sf
d, mode, unet, family = Path(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
encoders = json.loads(sys.argv[6])
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t0 = time.perf_counter()
model = sf.load_diffusion_model_file(d / "diffusion_models" / unet, weight_dtype=mode)
parts = [sf.load_text_encoder_part(d / "text_encoders" / n) for n in encoders]
clip = {"flux": lambda: sf.flux_text_encoder(parts, "cpu"), "sd3": lambda: sf.sd3_text_encoder(parts, "cpu"),
        "zimage": lambda: sf.zimage_text_encoder(parts[0], "cpu")}[family]()
vae = load_vae_file(d / "vae" / "vae.safetensors")
load_s, load_rss = time.perf_counter() - t0, rss()
with torch.inference_mode():
    t1 = time.perf_counter()
    cond = clip.encode("a fox in the snow")
    x = torch.randn(1, 16, 32, 32)
    kw = model.condition_kwargs(cond, 1, 256, 256)
    model.denoiser()(x, torch.tensor([0.7]), **kw)
    vae.decode(x)
    use_s = time.perf_counter() - t1
print(json.dumps({"load_s": load_s, "load_rss": load_rss, "use_s": use_s, "use_rss": rss(),
                  "unet_bytes": model.__nodegraph_nbytes__()}))
"""


#: Text encoder files of each family, in the order its loader node takes them.
ENCODERS = {"flux": ["clip_l.safetensors", "t5xxl_fp16.safetensors"],
            "sd3": ["clip_l.safetensors", "clip_g.safetensors", "t5xxl_fp16.safetensors"],
            "zimage": ["qwen_3_4b.safetensors"]}


def generate(d: Path, family: str, args: argparse.Namespace) -> None:
    """Random weights in the real layouts and widths (few blocks), written as the releases store them."""
    import torch
    from safetensors.torch import save_file

    from nodes.diffusion.models.clip_text import ClipTextConfig, ClipTextModel
    from nodes.diffusion.models.flux import FluxConfig, FluxTransformer
    from nodes.diffusion.models.mmdit import MMDiT, MMDiTConfig
    from nodes.diffusion.models.qwen3 import Qwen3Config, Qwen3Encoder
    from nodes.diffusion.models.t5 import T5Config, T5Encoder
    from nodes.diffusion.models.vae import AutoencoderKL, VAEConfig
    from nodes.diffusion.models.zimage import ZImageConfig, ZImageTransformer

    gen = torch.Generator().manual_seed(0)

    def write(module: torch.nn.Module, path: Path, dtype: torch.dtype) -> None:
        sd = {}
        for k, v in module.state_dict().items():
            t = torch.randn(v.shape, generator=gen) * (0.02 if v.ndim >= 2 else 1.0)
            sd[k] = t.to(dtype if v.is_floating_point() else v.dtype)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(sd, str(path))

    def t5() -> T5Encoder:
        return T5Encoder(T5Config(vocab_size=32128, d_model=4096, d_kv=64, num_heads=64, d_ff=10240, num_layers=2,
                                  num_buckets=32, gated=True))

    with torch.device("meta"):
        if family == "flux":
            diffusion = FluxTransformer(FluxConfig(depth=args.double, depth_single_blocks=args.single))
            encoders = [(ClipTextModel(ClipTextConfig(projection_dim=768)), torch.float16), (t5(), torch.float16)]
        elif family == "sd3":
            diffusion = MMDiT(MMDiTConfig(hidden_size=2432, num_heads=38, depth=args.blocks, pos_embed_max_size=192,
                                          attn2_layers=()))
            bigg = ClipTextConfig(width=1280, layers=32, heads=20, intermediate=5120, activation="gelu",
                                  projection_dim=1280)
            encoders = [(ClipTextModel(ClipTextConfig(projection_dim=768)), torch.float16),
                        (ClipTextModel(bigg), torch.float16), (t5(), torch.float16)]
        else:
            diffusion = ZImageTransformer(ZImageConfig(num_layers=args.blocks, num_refiner_layers=1))
            encoders = [(Qwen3Encoder(Qwen3Config(num_layers=2)), torch.bfloat16)]
        vae = AutoencoderKL(VAEConfig(z_channels=16, embed_dim=16, use_quant_conv=False))
    write(diffusion, d / "diffusion_models" / "bench.safetensors", torch.bfloat16)
    _fp8_copy(d / "diffusion_models" / "bench.safetensors", d / "diffusion_models" / "bench-fp8.safetensors")
    for (module, dtype), name in zip(encoders, ENCODERS[family], strict=True):
        write(module, d / "text_encoders" / name, dtype)
    write(vae, d / "vae" / "vae.safetensors", torch.float32)


def _fp8_copy(src: Path, dst: Path) -> None:
    """The diffusion model as an fp8 file (matrices in float8_e4m3fn), like the fp8 files users download."""
    import torch
    from safetensors.torch import load_file, save_file

    sd = load_file(str(src))
    # Only Linear/Conv weights, as fp8 releases store them (position tables and the like stay as they were).
    save_file({k: v.to(torch.float8_e4m3fn) if v.ndim >= 2 and k.endswith(".weight") else v
               for k, v in sd.items()}, str(dst))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", choices=sorted(ENCODERS), default="flux")
    ap.add_argument("--dir", default=None, help="default: /tmp/nodegraph-bench/<family>-split")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--double", type=int, default=1, help="FLUX double-stream blocks")
    ap.add_argument("--single", type=int, default=2, help="FLUX single-stream blocks")
    ap.add_argument("--blocks", type=int, default=2, help="SD3 joint blocks / Z-Image main layers")
    args = ap.parse_args()
    family = args.family
    d = Path(args.dir or f"/tmp/nodegraph-bench/{family}-split")
    if not (d / "vae" / "vae.safetensors").exists():
        print(f"generating {d} (random weights, real layouts) …", flush=True)
        generate(d, family, args)
    if not (d / "diffusion_models" / "bench-fp8.safetensors").exists():
        _fp8_copy(d / "diffusion_models" / "bench.safetensors", d / "diffusion_models" / "bench-fp8.safetensors")
    others = [p for p in d.rglob("*.safetensors") if p.parent.name != "diffusion_models"]
    print(machine())
    for p in d.rglob("*.safetensors"):
        subprocess.run(["cat", str(p)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    rows = []
    for unet, mode in (("bench.safetensors", "default"), ("bench.safetensors", "fp8_e4m3fn"),
                       ("bench-fp8.safetensors", "default")):
        unet_size = (d / "diffusion_models" / unet).stat().st_size
        total = unet_size + sum(p.stat().st_size for p in others)
        print(f"{family}: {unet} ({unet_size / 2**30:.2f} GiB), weight_dtype {mode}; set of files "
              f"{total / 2**30:.2f} GiB")
        runs = []
        for _ in range(args.repeat):
            out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(d), mode, unet, family,
                                  json.dumps(ENCODERS[family])], capture_output=True, text=True, check=True,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"})
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        load = sorted(r["load_s"] for r in runs)
        load_rss = max(r["load_rss"] for r in runs)
        use_rss = max(r["use_rss"] for r in runs)
        print(f"  load: median {statistics.median(load):.2f}s (min {load[0]:.2f}, max {load[-1]:.2f}) | "
              f"peak RSS after load {load_rss / 2**30:.2f} GiB = {load_rss / total:.2f}x files, after one use "
              f"{use_rss / 2**30:.2f} GiB = {use_rss / total:.2f}x | diffusion-model weights resident "
              f"{runs[0]['unet_bytes'] / 2**30:.2f} GiB = {runs[0]['unet_bytes'] / unet_size:.2f}x its file")
        rows.append({"metric": f"{family} split-file set load ({unet}, {mode})", "median": statistics.median(load),
                     "min": load[0], "max": load[-1], "unit": "s", "reference": "sum of file sizes",
                     "ratio": use_rss / total, "target": "peak RSS after first use vs files"})
    emit_summary(f"{family}_load", rows)


if __name__ == "__main__":
    main()
