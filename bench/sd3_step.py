"""SD3 MMDiT and Z-Image step time: ours vs diffusers' SD3Transformer2DModel / ZImageTransformer2DModel, same weights.

Run: .venv/bin/python bench/sd3_step.py [--family mmdit,zimage] [--latent 64] [--rounds 5] [--threads 1]

Random mid-size configurations (one forward = one sampling step at batch 1, fp32, inference mode):

* MMDiT: hidden 768 (12 heads of 64), 6 joint blocks with RMS qk-norm and MMDiT-X attention in
  blocks 0-1 (an SD3.5-medium shape at a quarter of the width), 333 text tokens (77 CLIP + 256 T5).
* Z-Image: dim 768 (6 heads of 128), 4 main + 1+1 refiner layers, 2560-wide caption features of
  100 real tokens.
* Qwen3 text encoder (``--family qwen3``): hidden 1024, 8 layers, GQA 16/8 heads of 128, 128 tokens,
  hidden layer -2 (ours stops there; transformers runs every layer, as diffusers' pipeline asks it to).

A 64x64 16-channel latent is 1,024 image tokens for both.  diffusers' weights are converted
to the original/ComfyUI keys by our converters and loaded into our models; outputs are compared
first (1e-4 relative) so the same work is timed.  Each round runs both once, the order reversed
every other round.  Reports median/min/max wall and thread-CPU seconds and the ratio
ours/diffusers (target <= 1.0).  ``--no-onednn`` times our models with their products on
F.linear / PyTorch's SDPA (diffusers' kernels) instead of oneDNN.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench._util import emit_summary, interleaved_times, machine  # noqa: E402
from nodes.diffusion.models import layers  # noqa: E402
from nodes.diffusion.models.mmdit import build_mmdit_from_state_dict, convert_diffusers_mmdit_to_original  # noqa: E402
from nodes.diffusion.models.zimage import build_zimage_from_state_dict, convert_diffusers_zimage_to_comfy  # noqa: E402
from tests.diffusion.flux_fixtures import randomize_  # noqa: E402


def _mmdit(latent: int):
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    ref = SD3Transformer2DModel(
        sample_size=latent, patch_size=2, in_channels=16, num_layers=6, attention_head_dim=64, num_attention_heads=12,
        joint_attention_dim=4096, caption_projection_dim=768, pooled_projection_dim=2048, out_channels=16,
        pos_embed_max_size=96, dual_attention_layers=(0, 1), qk_norm="rms_norm",
    )  # fmt: skip
    randomize_(ref, 0).eval().requires_grad_(False)
    ours = build_mmdit_from_state_dict(convert_diffusers_mmdit_to_original(ref.state_dict()))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, latent, latent, generator=g)
    sigma = torch.tensor([0.7])
    context, pooled = torch.randn(1, 333, 4096, generator=g), torch.randn(1, 2048, generator=g)

    def run_ours() -> torch.Tensor:
        return ours(x, sigma, context, pooled)

    def run_ref() -> torch.Tensor:
        return ref(hidden_states=x, encoder_hidden_states=context, pooled_projections=pooled,
                   timestep=sigma * 1000, return_dict=False)[0]  # fmt: skip

    return run_ours, run_ref, lambda out: out


def _zimage(latent: int):
    from diffusers import ZImageTransformer2DModel

    torch.manual_seed(0)
    ref = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=768, n_layers=4, n_refiner_layers=1,
        n_heads=6, n_kv_heads=6, qk_norm=True, cap_feat_dim=2560, axes_dims=[32, 48, 48], axes_lens=[1024, 512, 512],
    )  # fmt: skip
    randomize_(ref, 0).eval().requires_grad_(False)
    ours = build_zimage_from_state_dict(convert_diffusers_zimage_to_comfy(ref.state_dict()))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, latent, latent, generator=g)
    sigma = torch.tensor([0.7])
    context = torch.randn(1, 100, 2560, generator=g)
    x_list, caps = [x[0].unsqueeze(1)], [context[0]]

    def run_ours() -> torch.Tensor:
        return ours(x, sigma, context)

    def run_ref() -> torch.Tensor:
        return ref(x_list, 1 - sigma, caps, return_dict=False)[0]

    return run_ours, run_ref, lambda out: -torch.stack(out).squeeze(2)


def _qwen3(latent: int):
    """Text-encoder time: Qwen3 (hidden 1024, 8 layers, 16 query / 8 kv heads of 128) on 128 tokens,
    Z-Image's layer -2; the reference is transformers' Qwen3Model asked for all hidden states."""
    from transformers import Qwen3Config as HFConfig
    from transformers import Qwen3Model

    from nodes.diffusion.models.qwen3 import build_qwen3_from_state_dict

    torch.manual_seed(0)
    cfg = HFConfig(vocab_size=4096, hidden_size=1024, intermediate_size=3072, num_hidden_layers=8,
                   num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=512,
                   rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0})  # Qwen3-4B's base
    ref = randomize_(Qwen3Model(cfg), 0).eval().requires_grad_(False)
    ref.config._attn_implementation = "sdpa"
    ours = build_qwen3_from_state_dict(ref.state_dict())
    ids = torch.randint(0, 4096, (1, 128), generator=torch.Generator().manual_seed(1))

    def run_ours() -> torch.Tensor:
        return ours(ids, hidden_layer=-2)

    def run_ref() -> torch.Tensor:
        return ref(input_ids=ids, output_hidden_states=True).hidden_states[-2]

    return run_ours, run_ref, lambda out: out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="mmdit,zimage,qwen3")
    ap.add_argument("--latent", type=int, default=64, help="latent side (pixels / 8)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-onednn", action="store_true",
                    help="our products through F.linear / PyTorch's SDPA (layers.ONEDNN_LINEAR off), as diffusers'")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    layers.ONEDNN_LINEAR = not args.no_onednn
    print(f"machine: {machine()}, torch {torch.__version__}, threads {args.threads}, "
          f"load average {os.getloadavg()[0]:.1f}; our products: "
          f"{'oneDNN' if layers.ONEDNN_LINEAR and layers._ONEDNN_OK else 'F.linear/SDPA'}")  # fmt: skip
    rows = []
    for family in args.family.split(","):
        run_ours, run_ref, ref_to_image = {"mmdit": _mmdit, "zimage": _zimage, "qwen3": _qwen3}[family](args.latent)
        with torch.inference_mode():
            a, b = run_ours(), ref_to_image(run_ref())
            rel = float((a - b).abs().max() / b.abs().max())
            if rel > 1e-4:
                raise SystemExit(f"{family}: outputs differ (max relative {rel:.2e}): not timing different work")
            times = interleaved_times({"ours": run_ours, "diffusers": run_ref}, args.rounds)
        print(f"{family}: latent {args.latent}x{args.latent} ({(args.latent // 2) ** 2} image tokens); outputs agree "
              f"to {rel:.1e} relative; load average now {os.getloadavg()[0]:.1f}")  # fmt: skip
        for kind in ("wall", "cpu"):
            o, d = statistics.median(times["ours"][kind]), statistics.median(times["diffusers"][kind])
            for name in ("ours", "diffusers"):
                s = sorted(times[name][kind])
                print(f"  {kind:4s} {name:9s} median {statistics.median(s):.3f}s  min {s[0]:.3f}s  max {s[-1]:.3f}s")
            print(f"  {kind:4s} ratio ours/diffusers (medians): {o / d:.3f}  (target <= 1.0)")
            rows.append({"metric": f"{family} step ({kind})", "median": o, "min": min(times["ours"][kind]),
                         "max": max(times["ours"][kind]), "unit": "s", "reference": d, "ratio": o / d,
                         "target": "<= 1.0"})  # fmt: skip
    emit_summary("sd3_step", rows)


if __name__ == "__main__":
    main()
