"""LoRA and ControlNet through the engine's nodes on a tiny SD1-layout checkpoint.

- LoRA: changes the image, strength 0 gives exactly the base image, and the
  cached base model's weights are never modified (the next plain run equals
  the first one bit for bit).
- ControlNet: changes the image; strength 0 equals no ControlNet exactly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from nodes.diffusion.models.controlnet import ControlNet
from tests.diffusion.ldm_fixtures import randomize_
from tests.diffusion.pipeline_fixtures import (
    HEIGHT,
    WIDTH,
    make_executor,
    txt2img_graph,
    unet_config_for,
    write_tiny_checkpoint,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    write_tiny_checkpoint(root, "sd1")
    g = torch.Generator().manual_seed(3)
    rank, width = 4, 64
    lora = {}
    for name, (out_f, in_f) in {
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q": (32, 32),
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k": (32, width),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (width, width),
    }.items():
        lora[f"{name}.lora_down.weight"] = torch.randn(rank, in_f, generator=g) * 0.5
        lora[f"{name}.lora_up.weight"] = torch.randn(out_f, rank, generator=g) * 0.5
        lora[f"{name}.alpha"] = torch.tensor(float(rank))
    (root / "loras").mkdir()
    save_file(lora, str(root / "loras" / "test_lora.safetensors"))

    cn = randomize_(ControlNet(unet_config_for("sd1"), 3, (8, 16, 16)), 11)  # 4x hint downscale = the VAE's
    (root / "controlnet").mkdir()
    save_file({"control_model." + k: v.contiguous() for k, v in cn.state_dict().items()},
              str(root / "controlnet" / "test_cn.safetensors"), metadata={"nodegraph.controlnet.num_heads": "8"})
    return root


def _with_lora(strength_model: float, strength_clip: float):  # noqa: ANN202
    g = txt2img_graph("tiny_sd1.safetensors")
    g.add_node("diffusion.lora_loader", {"lora_name": "test_lora.safetensors", "strength_model": strength_model,
                                         "strength_clip": strength_clip}, id="lora")
    g.connect("ckpt", "MODEL", "lora", "model")
    g.connect("ckpt", "CLIP", "lora", "clip")
    g.connect("lora", "MODEL", "sampler", "model")
    g.connect("lora", "CLIP", "positive", "clip")
    g.connect("lora", "CLIP", "negative", "clip")
    return g


def _image(ex, g) -> torch.Tensor:  # noqa: ANN001
    report = ex.run(g, outputs=["decode"])
    assert report.status == "ok", report.error
    return report.results["decode"]["IMAGE"]


def test_lora_changes_output_strength_zero_is_identity_and_base_is_untouched(models: Path, tmp_path: Path) -> None:
    ex = make_executor(models, tmp_path)
    base = _image(ex, txt2img_graph("tiny_sd1.safetensors"))
    loader_model = ex.run(txt2img_graph("tiny_sd1.safetensors"), outputs=["ckpt"]).results["ckpt"]["MODEL"]
    before = {k: v.clone() for k, v in loader_model.unet.state_dict().items()}

    patched = _image(ex, _with_lora(1.0, 1.0))
    assert (patched - base).abs().max() > 1e-3
    model_only = _image(ex, _with_lora(1.0, 0.0))
    assert (model_only - base).abs().max() > 1e-4 and (model_only - patched).abs().max() > 1e-5
    torch.testing.assert_close(_image(ex, _with_lora(0.0, 0.0)), base, rtol=0, atol=0)

    after = loader_model.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    torch.testing.assert_close(_image(ex, txt2img_graph("tiny_sd1.safetensors")), base, rtol=0, atol=0)


def _with_controlnet(strength: float):  # noqa: ANN202
    g = txt2img_graph("tiny_sd1.safetensors")
    g.add_node("diffusion.controlnet_loader", {"control_net_name": "test_cn.safetensors"}, id="cn")
    g.add_node("test.hint", {}, id="hint")
    g.add_node("diffusion.controlnet_apply_advanced", {"strength": strength, "start_percent": 0.0,
                                                       "end_percent": 1.0}, id="apply")
    g.connect("positive", "CONDITIONING", "apply", "positive")
    g.connect("negative", "CONDITIONING", "apply", "negative")
    g.connect("cn", "CONTROL_NET", "apply", "control_net")
    g.connect("hint", "IMAGE", "apply", "image")
    g.connect("apply", "positive", "sampler", "positive")
    g.connect("apply", "negative", "sampler", "negative")
    return g


def test_controlnet_changes_output_and_strength_zero_equals_none(models: Path, tmp_path: Path) -> None:
    from nodegraph import Out, node
    from tests.diffusion.pipeline_fixtures import make_registry

    @node("test.hint", outputs=[Out("IMAGE", "IMAGE")])
    def hint(ctx):  # noqa: ANN001, ANN202
        img = torch.zeros(1, HEIGHT, WIDTH, 3)
        img[:, 8:24, 8:20] = 1.0
        return img

    reg = make_registry()
    reg.add_pack("test", [hint])
    ex = make_executor(models, tmp_path, reg)
    base = _image(ex, txt2img_graph("tiny_sd1.safetensors"))
    controlled = _image(ex, _with_controlnet(1.0))
    assert (controlled - base).abs().max() > 1e-3
    torch.testing.assert_close(_image(ex, _with_controlnet(0.0)), base, rtol=0, atol=0)
