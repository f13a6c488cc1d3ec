"""Converting a memory-mapped fp16 checkpoint to fp32 must not keep the fp16 pages resident.

Measured on the mapping itself (``/proc/self/smaps``: resident bytes of the file's mapping), so the check is
about this process's memory, not about timing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from nodes.diffusion.models.loading import assign_weights, build_on_meta, load_state_dict, strip_prefix

pytestmark = pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")

WIDTH, LAYERS = 512, 32  # 32 x 512 x 512 fp16 = 16 MiB of weights


def _resident_bytes(path: Path) -> int:
    """Resident bytes of every mapping of ``path`` in this process."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1]) * 1024
    return total


def _model() -> nn.Sequential:
    return nn.Sequential(*[nn.Linear(WIDTH, WIDTH) for _ in range(LAYERS)])


def test_fp16_to_fp32_conversion_releases_the_mapped_pages(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    weights = {f"m.{k}": (torch.randn(v.shape, generator=gen) * 0.05).half()
               for k, v in _model().state_dict().items()}
    path = tmp_path / "half.safetensors"
    save_file(weights, str(path))
    file_bytes = path.stat().st_size

    sd, _ = load_state_dict(path)
    touched = sum(float(t.float().sum()) for t in sd.values())  # page everything in, as a conversion does
    assert touched == touched and _resident_bytes(path) > 0.9 * file_bytes
    model = assign_weights(build_on_meta(_model), strip_prefix(sd, "m."), name="toy", dtype=torch.float32)

    assert _resident_bytes(path) < 0.05 * file_bytes  # only pages shared by two tensors may stay
    for key, want in weights.items():  # the weights are right, and the file still reads back correctly
        assert model.state_dict()[key[2:]].dtype == torch.float32
        torch.testing.assert_close(model.state_dict()[key[2:]], want.float(), rtol=0, atol=0)
        torch.testing.assert_close(sd[key], want, rtol=0, atol=0)


def test_fp32_weights_stay_mapped_and_shared(tmp_path: Path) -> None:
    """No conversion, no release: fp32 parameters *are* the mapping (zero copies)."""
    weights = {f"m.{k}": v.contiguous() for k, v in _model().state_dict().items()}
    path = tmp_path / "full.safetensors"
    save_file(weights, str(path))
    sd, _ = load_state_dict(path)
    model = assign_weights(build_on_meta(_model), strip_prefix(sd, "m."), name="toy", dtype=torch.float32)
    for p in model.parameters():
        float(p.sum())
    assert _resident_bytes(path) > 0.9 * path.stat().st_size


def test_clip_text_encoder_from_a_half_file_releases_its_pages(tmp_path: Path) -> None:
    """The checkpoint loader's CLIP path (which drops the ``position_ids`` buffer old SD1 files carry) must
    release the mapped fp16 pages like the UNet and VAE do; it kept a dict copy that could not."""
    from nodes.diffusion.checkpoint import build_clip
    from nodes.diffusion.models.clip_text import ClipTextConfig, ClipTextModel

    config = ClipTextConfig(width=256, layers=4, heads=4, intermediate=1024, vocab_size=4096)
    gen = torch.Generator().manual_seed(0)
    weights = {f"cond.{k}": (torch.randn(v.shape, generator=gen) * 0.05).half()
               for k, v in build_on_meta(ClipTextModel, config).state_dict().items()}
    weights["cond.text_model.embeddings.position_ids"] = torch.arange(77)[None]  # as SD1.5 files carry it
    path = tmp_path / "clip-half.safetensors"
    save_file(weights, str(path))
    file_bytes = path.stat().st_size

    sd, _ = load_state_dict(path)
    touched = sum(float(t.float().sum()) for t in sd.values())
    assert touched == touched and _resident_bytes(path) > 0.9 * file_bytes
    model = build_clip(strip_prefix(sd, "cond."), activation="quick_gelu", device=torch.device("cpu"),
                       dtype=torch.float32)

    assert _resident_bytes(path) < 0.05 * file_bytes
    state = model.state_dict()
    assert "text_model.embeddings.position_ids" not in state
    for key, want in weights.items():
        if not key.endswith("position_ids"):
            torch.testing.assert_close(state[key[len("cond."):]], want.float(), rtol=0, atol=0)


def test_collector_paused_restores_the_collector_even_on_error() -> None:
    """``collector_paused`` (what ``load_checkpoint`` runs under) switches the cyclic collector off for its
    body and back to exactly what it was: on, or off if the caller had turned it off; also when the body
    raises (a corrupt file)."""
    import gc

    from nodes.diffusion.models.loading import collector_paused

    was = gc.isenabled()
    try:
        for start in (True, False):
            (gc.enable if start else gc.disable)()
            with pytest.raises(RuntimeError), collector_paused():
                assert not gc.isenabled()
                raise RuntimeError("corrupt file")
            assert gc.isenabled() is start
    finally:
        (gc.enable if was else gc.disable)()


def test_load_checkpoint_leaves_the_collector_on_when_the_file_is_bad(tmp_path: Path) -> None:
    import gc

    from nodes.diffusion.checkpoint import load_checkpoint
    from nodes.diffusion.models.loading import CheckpointError

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    assert gc.isenabled()
    with pytest.raises(CheckpointError):
        load_checkpoint(bad)
    assert gc.isenabled()
