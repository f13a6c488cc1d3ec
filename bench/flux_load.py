"""Load time and peak memory of a FLUX split-file set (diffusion model, CLIP-L, T5, ae VAE) vs the files' size.

Run: .venv/bin/python bench/flux_load.py [--dir /tmp/nodegraph-bench/flux-split] [--repeat 3]
                                         [--double 1] [--single 2]

Generates once, outside the repo (never committed), random weights in the real layouts and
widths: a FLUX.1-dev transformer at full width (hidden 3072, 24 heads, T5 context 4096,
guidance embedding) but only ``--double``/``--single`` blocks, stored bf16; CLIP-L at full
size (fp16); T5-XXL at full width but 2 layers (fp16); the 16-channel ``ae`` VAE at full size
(fp32).  Each mode loads the set in fresh subprocesses through the loaders the nodes use and
reports wall time and peak RSS, right after loading and after one real use (a prompt
encoded, one transformer step on a 256x256 image, one VAE decode), against the sum of the
file sizes:

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
from nodes.diffusion.split_files import flux_text_encoder, load_diffusion_model_file, load_text_encoder_part
d, mode, unet = Path(sys.argv[2]), sys.argv[3], sys.argv[4]
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t0 = time.perf_counter()
model = load_diffusion_model_file(d / "diffusion_models" / unet, weight_dtype=mode)
clip = flux_text_encoder([load_text_encoder_part(d / "text_encoders" / n) for n in ("clip_l.safetensors",
                          "t5xxl_fp16.safetensors")], "cpu")
vae = load_vae_file(d / "vae" / "ae.safetensors")
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


def generate(d: Path, double: int, single: int) -> None:
    import torch
    from safetensors.torch import save_file

    from nodes.diffusion.models.clip_text import ClipTextConfig, ClipTextModel
    from nodes.diffusion.models.flux import FluxConfig, FluxTransformer
    from nodes.diffusion.models.t5 import T5Config, T5Encoder
    from nodes.diffusion.models.vae import AutoencoderKL, VAEConfig

    gen = torch.Generator().manual_seed(0)

    def write(module: torch.nn.Module, path: Path, dtype: torch.dtype) -> None:
        sd = {}
        for k, v in module.state_dict().items():
            t = torch.randn(v.shape, generator=gen) * (0.02 if v.ndim >= 2 else 1.0)
            sd[k] = t.to(dtype if v.is_floating_point() else v.dtype)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(sd, str(path))

    with torch.device("meta"):
        flux = FluxTransformer(FluxConfig(depth=double, depth_single_blocks=single))
        clip = ClipTextModel(ClipTextConfig(projection_dim=768))
        t5 = T5Encoder(T5Config(vocab_size=32128, d_model=4096, d_kv=64, num_heads=64, d_ff=10240, num_layers=2,
                                num_buckets=32, gated=True))
        vae = AutoencoderKL(VAEConfig(z_channels=16, embed_dim=16, use_quant_conv=False))
    write(flux, d / "diffusion_models" / "flux-bench.safetensors", torch.bfloat16)
    _fp8_copy(d / "diffusion_models" / "flux-bench.safetensors", d / "diffusion_models" / "flux-bench-fp8.safetensors")
    write(clip, d / "text_encoders" / "clip_l.safetensors", torch.float16)
    write(t5, d / "text_encoders" / "t5xxl_fp16.safetensors", torch.float16)
    write(vae, d / "vae" / "ae.safetensors", torch.float32)
    _tiny_tokenizer(d / "text_encoders" / "t5xxl_fp16.tokenizer.json")


def _fp8_copy(src: Path, dst: Path) -> None:
    """The diffusion model as an fp8 file (matrices in float8_e4m3fn), like the fp8 files users download."""
    import torch
    from safetensors.torch import load_file, save_file

    sd = load_file(str(src))
    save_file({k: v.to(torch.float8_e4m3fn) if v.ndim >= 2 else v for k, v in sd.items()}, str(dst))


def _tiny_tokenizer(path: Path) -> None:
    """A small unigram tokenizer (the real T5 vocabulary cannot be downloaded here)."""
    import tempfile

    sys.path.insert(0, str(ROOT))
    from tests.diffusion.flux_pipeline_fixtures import t5_tokenizer_json

    with tempfile.TemporaryDirectory() as tmp:
        path.write_text(t5_tokenizer_json(Path(tmp)).read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp/nodegraph-bench/flux-split")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--double", type=int, default=1)
    ap.add_argument("--single", type=int, default=2)
    args = ap.parse_args()
    d = Path(args.dir)
    if not (d / "vae" / "ae.safetensors").exists():
        print(f"generating {d} (random weights, real layouts) …", flush=True)
        generate(d, args.double, args.single)
    models = d / "diffusion_models"
    if not (models / "flux-bench-fp8.safetensors").exists():
        _fp8_copy(models / "flux-bench.safetensors", models / "flux-bench-fp8.safetensors")
    others = [p for p in d.rglob("*.safetensors") if p.parent.name != "diffusion_models"]
    print(machine())
    for p in d.rglob("*.safetensors"):
        subprocess.run(["cat", str(p)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    rows = []
    for unet, mode in (("flux-bench.safetensors", "default"), ("flux-bench.safetensors", "fp8_e4m3fn"),
                       ("flux-bench-fp8.safetensors", "default")):
        unet_size = (d / "diffusion_models" / unet).stat().st_size
        total = unet_size + sum(p.stat().st_size for p in others)
        print(f"{unet} ({unet_size / 2**30:.2f} GiB), weight_dtype {mode}; set of files {total / 2**30:.2f} GiB")
        runs = []
        for _ in range(args.repeat):
            out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(d), mode, unet], capture_output=True,
                                 text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        load = sorted(r["load_s"] for r in runs)
        load_rss = max(r["load_rss"] for r in runs)
        use_rss = max(r["use_rss"] for r in runs)
        print(f"  load: median {statistics.median(load):.2f}s (min {load[0]:.2f}, max {load[-1]:.2f}) | "
              f"peak RSS after load {load_rss / 2**30:.2f} GiB = {load_rss / total:.2f}x files, after one use "
              f"{use_rss / 2**30:.2f} GiB = {use_rss / total:.2f}x | diffusion-model weights resident "
              f"{runs[0]['unet_bytes'] / 2**30:.2f} GiB = {runs[0]['unet_bytes'] / unet_size:.2f}x its file")
        rows.append({"metric": f"FLUX split-file set load ({unet}, {mode})", "median": statistics.median(load),
                     "min": load[0], "max": load[-1], "unit": "s", "reference": "sum of file sizes",
                     "ratio": use_rss / total, "target": "peak RSS after first use vs files"})
    emit_summary("flux_load", rows)


if __name__ == "__main__":
    main()
