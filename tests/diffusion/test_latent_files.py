"""Save Latent / Load Latent: ComfyUI's ``.latent`` layout and ComfyUI's (unscaled) latent values."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from nodegraph import CancelToken, DevicePolicy, NodeContext, Registry, validate  # noqa: E402
from nodegraph.errors import NodeInputError  # noqa: E402
from nodes.diffusion.pack import register  # noqa: E402
from nodes.diffusion.pack.latent_files import SD_SCALE, load_latent, save_latent  # noqa: E402
from nodes.diffusion.runtime import Latent  # noqa: E402


def ctx(tmp_path: Path) -> NodeContext:
    return NodeContext("n", "t", DevicePolicy("cpu"), tmp_path / "out", CancelToken(),
                       {"input_dir": str(tmp_path / "in")}, {"nodes": {}})


def fake_vae(scale: float, shift: float, downscale: int = 8) -> SimpleNamespace:
    return SimpleNamespace(vae=SimpleNamespace(config=SimpleNamespace(scaling_factor=scale, shift_factor=shift)),
                           downscale=downscale)


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    # float32 round trip through a division and a multiplication: a few ulps of the magnitude
    return torch.allclose(a, b, rtol=4 * torch.finfo(torch.float32).eps, atol=0)


def test_saved_file_is_comfyui_format_on_comfyui_scale(tmp_path):
    ours = torch.randn(2, 4, 8, 6, generator=torch.Generator().manual_seed(0))
    result = save_latent.fn(ctx(tmp_path), Latent(ours), "latents/ComfyUI")
    path = Path(result.files[0])
    assert path.name == "ComfyUI_00001_.latent" and path.parent == (tmp_path / "out" / "latents").resolve()
    data = load_file(str(path))
    assert set(data) == {"latent_tensor", "latent_format_version_0"} and data["latent_format_version_0"].numel() == 0
    assert close(data["latent_tensor"], ours / SD_SCALE)  # ComfyUI's LATENT: the raw VAE latent
    again = save_latent.fn(ctx(tmp_path), Latent(ours), "latents/ComfyUI").files[0]
    assert Path(again).name == "ComfyUI_00002_.latent"


@pytest.mark.parametrize("marker", [True, False])
def test_comfyui_files_load_onto_our_scale(tmp_path, marker):
    raw = torch.randn(1, 4, 5, 7, generator=torch.Generator().manual_seed(1)) * 5
    (tmp_path / "in").mkdir()
    tensors = {"latent_tensor": raw}
    if marker:
        tensors["latent_format_version_0"] = torch.tensor([])
    else:  # ComfyUI's first format stored the already-scaled latent
        tensors["latent_tensor"] = raw * SD_SCALE
    save_file(tensors, str(tmp_path / "in" / "from_comfy.latent"))
    out = load_latent.fn(ctx(tmp_path), "from_comfy.latent")
    assert close(out.samples, raw * SD_SCALE) and out.downscale == 8


def test_round_trip_with_a_vae_that_has_scale_and_shift(tmp_path):
    vae = fake_vae(0.3611, 0.1159, downscale=16)  # FLUX-like latent space
    ours = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(2))
    path = Path(save_latent.fn(ctx(tmp_path), Latent(ours, downscale=16), "x", vae).files[0])
    assert close(load_file(str(path))["latent_tensor"], ours / 0.3611 + 0.1159)
    (tmp_path / "in").mkdir()
    path.rename(tmp_path / "in" / path.name)
    back = load_latent.fn(ctx(tmp_path), path.name, vae)
    assert close(back.samples, ours) and back.downscale == 16


def test_bad_latent_files_name_the_input(tmp_path):
    (tmp_path / "in").mkdir()
    save_file({"other": torch.zeros(1)}, str(tmp_path / "in" / "wrong.latent"))
    (tmp_path / "in" / "junk.latent").write_bytes(b"not a safetensors file")
    for name, text in (("wrong.latent", "has no 'latent_tensor'"), ("junk.latent", "cannot read"),
                       ("missing.latent", "not found"), ("../x.latent", "not a file name inside")):
        with pytest.raises(NodeInputError) as err:
            load_latent.fn(ctx(tmp_path), name)
        assert err.value.input == "latent" and text in err.value.message


def test_load_latent_lists_the_input_folder_in_validation(tmp_path):
    from nodegraph import Graph

    reg = Registry()
    register(reg)
    (tmp_path / "in").mkdir()
    save_file({"latent_tensor": torch.zeros(1, 4, 2, 2), "latent_format_version_0": torch.tensor([])},
              str(tmp_path / "in" / "a.latent"))
    g = Graph()
    g.add_node("diffusion.load_latent", {"latent": "a.latent"}, id="l")
    g.add_node("diffusion.save_latent", id="s")
    g.connect("l", "LATENT", "s", "samples")
    assert validate(g, reg, settings={"input_dir": str(tmp_path / "in")}) == []
    g.set_value("l", "latent", "b.latent")
    [issue] = validate(g, reg, settings={"input_dir": str(tmp_path / "in")})
    assert issue.kind == "not_in_choices" and "'a.latent'" in issue.fix
