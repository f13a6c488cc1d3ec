"""What every demo-model training script shares: architectures, data, text encoding, checkpoints.

The architectures live here (not in each script) because the UNet script
needs the VAE's config to read its checkpoint, the ControlNet script needs
the UNet's, and the exporter needs all of them.  Everything the app's
loader cannot infer from tensor shapes is written by :func:`checkpoint_metadata`
from the same constants the training used, so the two cannot drift apart.

Text is encoded for training with :func:`encode_with_grad`, which goes through
the app's own tokenizer and :func:`~nodes.diffusion.text.encode.chunk_prompt`
(same BOS/EOS/padding, same layer choice and final norm as
:func:`~nodes.diffusion.text.encode.encode`), only with gradients enabled so
the text encoder can be trained jointly with the UNet.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nodes.diffusion.models.clip_text import ClipTextConfig, ClipTextModel, select_hidden
from nodes.diffusion.models.unet_config import UNetConfig
from nodes.diffusion.models.vae import VAEConfig
from nodes.diffusion.text.encode import EncoderSettings, chunk_prompt
from nodes.diffusion.text.tokenizer import DEFAULT_VOCAB_PATH, ClipTokenizer

REPO = Path(__file__).resolve().parent.parent
# Training state is pickled (optimizer moments, cached dataset attributes), so it lives in a folder only its
# owner can write: a shared /tmp path would let another user plant a payload that load_work() would unpickle.
WORK = Path(os.environ.get("NODEGRAPH_TRAIN_DIR", Path.home() / ".cache" / "nodegraph" / "train"))
DEMO_DIR = REPO / "nodes" / "diffusion" / "demo_models"
CHECKPOINT_PATH = DEMO_DIR / "checkpoints" / "nodegraph-shapes-v1.safetensors"
CONTROLNET_PATH = DEMO_DIR / "controlnet" / "nodegraph-shapes-mask-controlnet-v1.safetensors"
UPSCALER_PATH = DEMO_DIR / "upscale_models" / "nodegraph-shapes-2x-compact-v1.safetensors"

IMAGE_SIZE = 64
MAX_MERGES = 4000  # first K merges of CLIP's BPE list: every caption word is 1-3 tokens
WINDOW = 77
# SD1-style use of the encoder: last layer, final LayerNorm, padded with EOS.
ENCODER_SETTINGS = EncoderSettings(clip_skip=1, final_norm=True, pad_id=None)
SCHEDULE = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear",
            "linear_start": 0.00085, "linear_end": 0.012}  # fmt: skip
EMPTY_CAPTION_PROB = 0.1  # unconditional examples, so CFG works

# GroupNorm has 32 groups: at 32 channels every channel is normalised on its own, which erases a
# flat colour field before the decoder's last conv (a first run with ch_mult (1, 2, 2) got 18 %
# of object colours right after 19 min).  64 channels = pairs per group, whose *difference*
# survives, hence (2, 2, 2).
VAE_CONFIG = VAEConfig(ch=32, ch_mult=(2, 2, 2), num_res_blocks=1, z_channels=4, embed_dim=4)
TEXT_WIDTH = 128
TEXT_HEADS = 2
TEXT_ACTIVATION = "gelu"


def text_config(tokenizer: ClipTokenizer) -> ClipTextConfig:
    return ClipTextConfig(width=TEXT_WIDTH, layers=3, heads=TEXT_HEADS, intermediate=4 * TEXT_WIDTH,
                          vocab_size=tokenizer.vocab_size, max_positions=WINDOW, activation=TEXT_ACTIVATION)


UNET_CONFIG = UNetConfig(
    in_channels=4,
    out_channels=4,
    model_channels=32,
    channel_mult=(1, 2, 4),
    num_res_blocks=(1, 1, 1),
    transformer_depth=(1, 1, 1),
    transformer_depth_middle=1,
    transformer_depth_output=(1, 1, 1, 1, 1, 1),
    context_dim=TEXT_WIDTH,
    use_linear_in_transformer=True,
    num_head_channels=32,
)
HINT_BLOCK_CHANNELS = (16, 32, 64)  # 3 entries -> 4x hint downsampling, matching the VAE


def work_dir() -> Path:
    """The training work folder, created private (0700) if missing."""
    WORK.mkdir(parents=True, exist_ok=True, mode=0o700)
    return WORK


def load_work(path: Path) -> dict:
    """Load one of the training scripts' own state files (a full pickle, so only from a private folder).

    These files hold numpy arrays and optimizer state, which ``weights_only`` loading refuses; instead
    the folder must belong to this user and be writable by nobody else, so nobody else can plant one.
    """
    st = path.parent.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise PermissionError(f"{path.parent} is writable by other users or not yours; refusing to unpickle "
                              f"{path.name} from it -> set NODEGRAPH_TRAIN_DIR to a private folder (chmod 700)")
    return torch.load(path, weights_only=False)


def setup_torch(threads: int | None = None) -> None:
    """Pin the thread count: on a shared 2-core box spinning OpenMP workers cost 10-20x."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch.set_num_threads(int(os.environ.get("TRAIN_THREADS", threads or 1)))


def tokenizer() -> ClipTokenizer:
    return ClipTokenizer.from_file(DEFAULT_VOCAB_PATH, max_merges=MAX_MERGES)


def token_ids(tok: ClipTokenizer, captions: list[str]) -> torch.Tensor:
    """[B, 77] ids exactly as the app pads them (captions here always fit one chunk)."""
    rows = []
    for c in captions:
        ids, _ = chunk_prompt(tok, c, window=WINDOW, pad_id=ENCODER_SETTINGS.pad_id)
        if len(ids) != 1:
            raise ValueError(f"caption longer than one {WINDOW}-token chunk: {c!r}")
        rows.append(ids[0])
    return torch.tensor(rows, dtype=torch.long)


def encode_with_grad(model: ClipTextModel, tok: ClipTokenizer, ids: torch.Tensor) -> torch.Tensor:
    """Context [B, 77, width] with the layer choice of :data:`ENCODER_SETTINGS` (gradients on)."""
    out = model(ids, eos_id=tok.eos_id)
    return select_hidden(model, out, -ENCODER_SETTINGS.clip_skip, ENCODER_SETTINGS.final_norm)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def outline_ring(masks: np.ndarray) -> torch.Tensor:
    """[N,1,H,W] float: 1 on the anti-aliased outline pixels of each mask and their 8 neighbours, else 0.

    Where a square differs from a rounded square, and a star from a blob: both the VAE's and
    the UNet's losses weight it up.
    """
    import cv2

    partial = ((masks > 0) & (masks < 255)).astype(np.uint8)
    k = np.ones((3, 3), np.uint8)
    return torch.from_numpy(np.stack([cv2.dilate(p, k) for p in partial]).astype(np.float32)).unsqueeze(1)


def outline_weights(masks: np.ndarray, edge_weight: float, latent_size: int) -> torch.Tensor:
    """[n,1,h,w] loss weights: 1 + ``edge_weight`` x the share of each latent pixel's patch near the outline.

    ``latent_size`` is the latent's width (its factor to the masks' width is the VAE's, in both axes).
    A square and a rounded square differ only along the outline (the corners); plain MSE spends most of
    its weight on flat interior and background, where every shape looks the same.  Shared by the UNet,
    FLUX and SD3 demo trainers.
    """
    return 1.0 + edge_weight * F.avg_pool2d(outline_ring(masks), masks.shape[-1] // latent_size)


def checkpoint_metadata(scaling_factor: float, description: str) -> dict[str, str]:
    """Safetensors metadata for the all-in-one checkpoint (what shapes cannot tell a loader)."""
    return {
        "nodegraph.family": "shapes-demo",
        "nodegraph.prediction_type": "v",
        "nodegraph.vae.scaling_factor": f"{scaling_factor:.6f}",
        "nodegraph.unet.num_head_channels": str(UNET_CONFIG.num_head_channels),
        "nodegraph.clip.activation": TEXT_ACTIVATION,
        "nodegraph.clip.heads": str(TEXT_HEADS),
        "nodegraph.clip.skip": str(ENCODER_SETTINGS.clip_skip),
        "nodegraph.clip.final_norm": "true" if ENCODER_SETTINGS.final_norm else "false",
        "nodegraph.clip.pad": "eos" if ENCODER_SETTINGS.pad_id is None else str(ENCODER_SETTINGS.pad_id),
        "nodegraph.tokenizer.max_merges": str(MAX_MERGES),
        "nodegraph.schedule": json.dumps(SCHEDULE),
        "nodegraph.default_size": str(IMAGE_SIZE),
        "nodegraph.default_steps": "10",
        "nodegraph.default_cfg": "5.0",
        "nodegraph.default_sampler": "euler",
        "nodegraph.default_scheduler": "normal",
        "nodegraph.description": description,
    }


def fp16_state_dict(module: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().to(torch.float16).contiguous() for k, v in module.state_dict().items()}


@dataclass
class Timer:
    """Wall time of a script, including earlier runs it resumed from."""

    previous: float = 0.0

    def __post_init__(self) -> None:
        self.start = time.time()

    @property
    def elapsed(self) -> float:
        return self.previous + time.time() - self.start


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


# ----------------------------------------------------------------------------- sampling checks

# Well-separated colour pairs (every palette pair is >= 255 apart); each shape three times,
# every colour both as object and as background.  Shared by training-time checks and tests.
EVAL_PROMPTS: tuple[str, ...] = (
    "a red circle on a blue background",
    "a green square on a black background",
    "a yellow triangle on a magenta background",
    "a white star on a red background",
    "a cyan circle on a yellow background",
    "a magenta square on a green background",
    "a black triangle on a white background",
    "a blue star on a cyan background",
    "a yellow circle on a black background",
    "a red square on a white background",
    "a blue triangle on a yellow background",
    "a green star on a magenta background",
)
EVAL_SEEDS: tuple[int, ...] = (0, 1, 2)


@torch.no_grad()
def sample_images(
    model,
    clip,
    vae,
    prompts: list[str] | tuple[str, ...],
    seeds: list[int] | tuple[int, ...],
    *,
    steps: int = 10,
    cfg: float = 5.0,
    sampler: str = "euler",
    scheduler: str = "normal",
    control=None,
    hints: torch.Tensor | None = None,
    height: int | None = None,
    width: int | None = None,
) -> np.ndarray:
    """Generate one image per (prompt, seed) through the app's runtime objects.

    ``model``/``clip``/``vae`` are :class:`~nodes.diffusion.runtime.DiffusionModel`,
    ``TextEncoder`` and ``VAEModel``; ``control`` an optional ControlNet with
    per-image ``hints`` [N, 3, H, W] in 0..1.  ``height``/``width`` default to the model's
    default size.  Returns uint8 [N, H, W, 3] with ``N = len(prompts) * len(seeds)`` in
    prompt-major order.
    """
    from nodes.diffusion.runtime import ControlHint, as_context
    from nodes.diffusion.sampling import sample

    height = height or model.rules.default_size
    width = width or model.rules.default_size
    f = vae.downscale
    uncond = clip.encode("")
    out = []
    i = 0
    for prompt in prompts:
        cond = clip.encode(prompt)
        for seed in seeds:
            c = cond
            if control is not None:
                c = type(cond)(cond.context, cond.pooled, cond.y, (ControlHint(control, hints[i : i + 1]),))
            latent = torch.zeros(1, model.latent_channels, height // f, width // f)
            z = sample(model.denoiser(), model.schedule, latent, sampler=sampler, scheduler=scheduler,
                       steps=steps, seed=seed, cfg=cfg, cond_kwargs=as_context(c, 1, model, height, width),
                       uncond_kwargs=as_context(uncond, 1, model, height, width))
            img = vae.decode(z)
            out.append((img[0].numpy() * 255).round().astype(np.uint8))
            i += 1
    return np.stack(out)


def grade(images: np.ndarray, prompts, seeds) -> dict[str, float]:
    """Checker pass rates: per image (``img_*``), by majority over seeds per prompt (``maj_*``),
    and the shape rate per asked-for shape (``shape_ok_<shape>``)."""
    from training.captions import parse_caption
    from training.checker import check, compare

    n_seeds = len(seeds)
    per = {"color_ok": 0, "background_ok": 0, "shape_ok": 0}
    maj = {"color_ok": 0, "background_ok": 0, "shape_ok": 0}
    by_shape: dict[str, list[bool]] = {}
    for p_i, prompt in enumerate(prompts):
        attrs = parse_caption(prompt)
        oks = [compare(check(images[p_i * n_seeds + s]), attrs) for s in range(n_seeds)]
        for k in per:
            hits = sum(o[k] for o in oks)
            per[k] += hits
            maj[k] += hits * 2 > n_seeds
        if "shape" in attrs:
            by_shape.setdefault(attrs["shape"], []).extend(o["shape_ok"] for o in oks)
    n = len(prompts)
    return {**{f"img_{k}": v / (n * n_seeds) for k, v in per.items()},
            **{f"maj_{k}": v / n for k, v in maj.items()},
            **{f"shape_ok_{k}": sum(v) / len(v) for k, v in by_shape.items()}}


# ----------------------------------------------------------------------------- position and size words
# Shared by the demo trainers that teach position/size words (train_flux, train_unet --positions) and
# by their tests: one held-out prompt set, one way to draw training samples, one grading.

HELD_OUT_SEED = 9700
CAPTION_WORD_PROB = 0.75  # P(size word) and P(position phrase) in a caption when training for them


def held_out_prompts(n: int = 40) -> list[tuple[str, dict]]:
    """``n`` prompts naming a position and a size ("a small red star in the top left on a blue background"),
    from held-out 64x64 samples (seed 9700+), each position 4-5 times; their (shape, colour, background,
    position) combinations are excluded from training.  Returns (prompt, attrs)."""
    import math

    from training.captions import POSITIONS, caption_for
    from training.shapes import generate

    rng = np.random.default_rng(HELD_OUT_SEED)
    out: list[tuple[str, dict]] = []
    per_cell = {p: 0 for p in POSITIONS}
    i = 0
    while len(out) < n:
        s = generate(HELD_OUT_SEED + i)
        i += 1
        a = s.attrs
        if a["size"] == "medium" or per_cell[a["position"]] >= math.ceil(n / len(POSITIONS)):
            continue
        per_cell[a["position"]] += 1
        prompt = caption_for(a, rng, with_size=True, with_position=True)
        out.append((prompt, a))
    return out


def held_out_combo(a: dict) -> tuple[str, str, str, str]:
    """The (shape, colour, background, position) a held-out prompt names."""
    return a["shape"], a["color"], a["background"], a["position"]


def sampling_weights(attrs: list[dict], held: set, balanced: bool = True) -> np.ndarray:
    """Per-sample draw probabilities: each position cell equally likely (or, with ``balanced=False``,
    the generator's own distribution); held-out combinations never.

    The generator puts ~40 % of objects in the center cell and ~3 % in each corner."""
    cells = [a["position"] for a in attrs]
    counts = {c: cells.count(c) if balanced else 1 for c in set(cells)}
    w = np.array([0.0 if held_out_combo(a) in held else 1.0 / counts[a["position"]] for a in attrs])
    return w / w.sum()


def evaluate_positions(model, text, vae, seeds=(0,), n: int = 40, **sample_kwargs) -> dict[str, float]:
    """Checker pass rates on the :func:`held_out_prompts` images (runtime objects as for
    :func:`sample_images`, whose keyword arguments -- cfg, steps, scheduler -- pass through)."""
    from training.captions import parse_caption
    from training.checker import check, compare

    prompts = [p for p, _ in held_out_prompts(n)]
    imgs = sample_images(model, text, vae, prompts, seeds, **sample_kwargs)
    res = {"position_ok": 0, "size_ok": 0, "color_ok": 0, "background_ok": 0, "shape_ok": 0}
    for i, p in enumerate(prompts):
        for s in range(len(seeds)):
            ok = compare(check(imgs[i * len(seeds) + s]), parse_caption(p))
            for k in res:
                res[k] += ok[k]
    return {k: v / (len(prompts) * len(seeds)) for k, v in res.items()}
