"""FLUX transformer step time: our FluxTransformer vs diffusers' FluxTransformer2DModel on the same weights.

Run: .venv/bin/python bench/flux_step.py [--hidden 768] [--double 4] [--single 8] [--latent 64]
                                          [--txt 128] [--rounds 5] [--threads 1] [--schnell]

One random configuration (default: hidden 768 = 6 heads of 128, 4 double + 8 single blocks,
a 64x64 16-channel latent = 1,024 image tokens, 128 text tokens, batch 1, dev with guidance),
diffusers' weights converted to BFL keys by our converter and loaded into our model.  Before
timing, both outputs are compared (they must agree to 1e-4 relative) so equal work is timed.
Each round runs both models once, the order reversed every other round so drift on a
shared machine hits both alike.  Reports median/min/max wall and thread-CPU seconds per
step and the ratio ours/diffusers (target <= 1.0).  fp32, inference mode.  ``--no-onednn`` times
our model with its products on F.linear / PyTorch's SDPA (diffusers' kernels) instead of oneDNN.
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
from nodes.diffusion.models.flux import build_flux_from_state_dict, convert_diffusers_flux_to_bfl  # noqa: E402
from tests.diffusion.flux_fixtures import diffusers_flux_velocity, image_ids, pack_latents, randomize_  # noqa: E402


def _models(args: argparse.Namespace):
    from diffusers import FluxTransformer2DModel

    heads = args.hidden // 128
    torch.manual_seed(0)
    ref = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=args.double, num_single_layers=args.single,
        attention_head_dim=128, num_attention_heads=heads, joint_attention_dim=4096,
        pooled_projection_dim=768, guidance_embeds=not args.schnell, axes_dims_rope=(16, 56, 56),
    )  # fmt: skip
    randomize_(ref, 0).eval().requires_grad_(False)
    ours = build_flux_from_state_dict(convert_diffusers_flux_to_bfl(ref.state_dict()))
    return ref, ours


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--double", type=int, default=4)
    ap.add_argument("--single", type=int, default=8)
    ap.add_argument("--latent", type=int, default=64, help="latent side (pixels / 8)")
    ap.add_argument("--txt", type=int, default=128, help="text tokens")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-onednn", action="store_true",
                    help="our products through F.linear / PyTorch's SDPA (layers.ONEDNN_LINEAR off), as diffusers'")
    ap.add_argument("--schnell", action="store_true", help="no guidance embedding")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    layers.ONEDNN_LINEAR = not args.no_onednn

    ref, ours = _models(args)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, args.latent, args.latent, generator=g)
    sigma = torch.tensor([0.7])
    context = torch.randn(1, args.txt, 4096, generator=g)
    pooled = torch.randn(1, 768, generator=g)
    guidance = None if args.schnell else torch.tensor([3.5])
    ids, txt_ids = image_ids(args.latent, args.latent), torch.zeros(args.txt, 3)
    packed = pack_latents(x)

    with torch.inference_mode():
        a = ours(x, sigma, context, pooled, guidance)
        b = diffusers_flux_velocity(ref, x, sigma, context, pooled, guidance)
        rel = float((a - b).abs().max() / b.abs().max())
        if rel > 1e-4:
            raise SystemExit(f"outputs differ (max relative {rel:.2e}): not timing different work")

        def run_ours() -> None:
            ours(x, sigma, context, pooled, guidance)

        def run_diffusers() -> None:
            # The model call alone (packing/ids prepared outside), as a diffusers pipeline step does.
            ref(hidden_states=packed, encoder_hidden_states=context, pooled_projections=pooled, timestep=sigma,
                img_ids=ids, txt_ids=txt_ids, guidance=guidance, return_dict=False)  # fmt: skip

        times = interleaved_times({"ours": run_ours, "diffusers": run_diffusers}, args.rounds)

    print(f"machine: {machine()}, torch {torch.__version__}, threads {args.threads}; our products: "
          f"{'oneDNN' if layers.ONEDNN_LINEAR and layers._ONEDNN_OK else 'F.linear/SDPA'}")
    print(f"config: hidden {args.hidden}, {args.double} double + {args.single} single blocks, latent "
          f"{args.latent}x{args.latent} ({(args.latent // 2) ** 2} image tokens), {args.txt} text tokens, "
          f"{'schnell' if args.schnell else 'dev'}; outputs agree to {rel:.1e} relative")  # fmt: skip
    rows = []
    for kind in ("wall", "cpu"):
        o, d = statistics.median(times["ours"][kind]), statistics.median(times["diffusers"][kind])
        for name in ("ours", "diffusers"):
            s = sorted(times[name][kind])
            print(f"{kind:4s} {name:9s} median {statistics.median(s):.3f}s  min {s[0]:.3f}s  max {s[-1]:.3f}s")
        print(f"{kind:4s} ratio ours/diffusers (medians): {o / d:.3f}  (target <= 1.0)")
        rows.append({"metric": f"flux step ({kind})", "median": o, "min": min(times["ours"][kind]),
                     "max": max(times["ours"][kind]), "unit": "s", "reference": d, "ratio": o / d,
                     "target": "<= 1.0"})  # fmt: skip
    emit_summary("flux_step", rows)


if __name__ == "__main__":
    main()
