"""Big models on small machines, through the real nodes: a device budget (``--vram-budget``) with
streaming, GGUF and fp8 files in the loaders, LoRA on quantized weights, and the memory figures in
the run report.  CPU only: with a budget the device is emulated (its copies are separate CPU
buffers accounted apart from the home copies), which runs the same manager code as CUDA.
"""

from __future__ import annotations

import json
import shutil
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from nodegraph import Executor, Graph, WorkflowInvalid
from nodegraph.progress import TerminalProgress
from nodes.diffusion.quant.gguf_file import dequantize_state_dict, read_gguf
from nodes.diffusion.quant.gguf_write import write_gguf
from nodes.diffusion.quant.layers import quantized_layers
from tests.diffusion.ldm_fixtures import make_unet
from tests.diffusion.pipeline_fixtures import make_executor, make_registry, txt2img_graph, write_tiny_checkpoint
from tests.tolerance import SIGMAS, rounding_rtol

Q8_0, Q4_K = 8, 12


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def noise_equivalent(original: dict[str, torch.Tensor], stored: dict[str, object], seed: int = 11
                     ) -> dict[str, torch.Tensor]:
    """``original`` with every weight the file quantized perturbed by Gaussian noise of the same RMS as
    its quantization error: a net of these weights shows how far that *amount* of weight error moves the
    output, which is the yardstick for "within the quantization's own error"."""
    from nodes.diffusion.quant.gguf_file import is_quantized

    g = torch.Generator().manual_seed(seed)
    out = dict(original)
    quantized = [k for k, t in stored.items() if is_quantized(t)]
    assert quantized, "nothing was quantized: the test would prove nothing"
    for k, t in stored.items():
        if is_quantized(t):
            err = t.dequantize(torch.float32) - original[k]  # type: ignore[union-attr]
            out[k] = original[k] + torch.randn(err.shape, generator=g) * err.pow(2).mean().sqrt()
    return out


def executor(models: Path, out: Path, **settings: str) -> Executor:
    return Executor(make_registry(), device="cpu", output_dir=out,
                    settings={"models_dir": str(models), "include_demo_models": False, **settings})


def tensor_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


# ------------------------------------------------------------------ device budget through the nodes


def test_model_three_times_the_budget_runs_through_the_sampler_bitwise_equal(tmp_path: Path) -> None:
    models = tmp_path / "models"
    ckpt = write_tiny_checkpoint(models, "sd1")
    graph = txt2img_graph(ckpt.name, steps=3)
    full = make_executor(models, tmp_path / "a").run(graph, outputs=["ckpt", "sampler"])
    full.raise_for_status()
    unet_bytes = tensor_bytes(full.results["ckpt"]["MODEL"].unet)
    # without a budget the CPU uses the weights in place; the manager still counts them
    assert full.stats["memory"]["budget"] is None and full.stats["memory"]["resident"] == unet_bytes

    budget = unet_bytes // 3
    ex = executor(models, tmp_path / "b")
    # the tiny text encoder's 49408-token embedding alone is 4x this budget (a real T5-XXL's is 3 % of the
    # model): encode without a budget, then the cached prompts feed the sampler under it
    ex.run(graph, outputs=["positive", "negative"]).raise_for_status()
    ex.settings["vram_budget"] = str(budget)
    seen = StringIO()
    report = ex.run(graph, outputs=["sampler"], on_event=TerminalProgress(seen, enabled=True))
    assert report.nodes["sampler"].status == "executed" and report.nodes["positive"].status == "cached"
    report.raise_for_status()
    memory = report.stats["memory"]
    assert memory["budget"] == budget and memory["device"] == "cpu (emulated)"
    assert 0 < memory["peak"] <= budget  # accounted device bytes never exceeded the budget
    assert memory["streamed_blocks"] > 0 and memory["offloaded"] > 0
    # streaming changes where the weights are, not one bit of the result
    assert torch.equal(report.results["sampler"]["LATENT"].samples, full.results["sampler"]["LATENT"].samples)
    # the figures are in the JSON report and on the progress line
    assert json.loads(json.dumps(report.to_dict()))["stats"]["memory"]["peak"] == memory["peak"]
    assert "memory: device" in seen.getvalue() and "blocks streamed" in seen.getvalue()


def test_budget_from_the_environment_and_bad_budgets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "models"
    ckpt = write_tiny_checkpoint(models, "sd1")
    monkeypatch.setenv("NODEGRAPH_VRAM_BUDGET", "1G")
    report = make_executor(models, tmp_path / "a").run(txt2img_graph(ckpt.name, steps=1), outputs=["sampler"])
    report.raise_for_status()
    assert report.stats["memory"]["budget"] == 10**9
    monkeypatch.setenv("NODEGRAPH_VRAM_BUDGET", "lots")
    report = make_executor(models, tmp_path / "b").run(txt2img_graph(ckpt.name, steps=1), outputs=["sampler"])
    assert report.status == "error" and "NODEGRAPH_VRAM_BUDGET" in report.error.message
    # a budget too small for even one block fails on the input that brought the model, saying what to do
    monkeypatch.setenv("NODEGRAPH_VRAM_BUDGET", "1000")
    report = make_executor(models, tmp_path / "c").run(txt2img_graph(ckpt.name, steps=1), outputs=["sampler"])
    assert report.status == "error" and report.error.node_id == "positive" and report.error.input == "clip"
    assert "--vram-budget" in report.error.message and "Traceback" not in report.error.message


def test_text_encoders_leave_the_device_after_encoding(tmp_path: Path) -> None:
    models = tmp_path / "models"
    ckpt = write_tiny_checkpoint(models, "sd1")
    ex = executor(models, tmp_path / "out", vram_budget="1G")
    report = ex.run(txt2img_graph(ckpt.name), outputs=["positive"])
    report.raise_for_status()
    manager = ex.services["diffusion.memory"].manager
    clip = next(iter(report.results["positive"].values()))
    assert clip is not None and manager.resident == 0 and manager.peak > 0
    assert report.stats["memory"]["resident"] == 0


def test_percent_budget_is_of_the_device_memory(tmp_path: Path) -> None:
    from nodegraph.memory import physical_memory
    from nodes.diffusion.memory import resolve_budget

    assert resolve_budget("50%", "cpu") == physical_memory() // 2
    with pytest.raises(ValueError, match="percentage"):
        resolve_budget("150%", "cpu")


# ------------------------------------------------------------------ GGUF and fp8 through the loader node


def flux_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A FLUX.1-layout (BFL keys) transformer 256 wide: every Linear but img_in (64 inputs) has rows of
    whole 256-value super-blocks, so Q4_K really quantizes them."""
    from nodes.diffusion.models.flux import FluxConfig, FluxTransformer
    from nodes.diffusion.models.layers import init_weights

    cfg = FluxConfig(hidden_size=256, num_heads=2, depth=1, depth_single_blocks=1, context_in_dim=256,
                     vec_in_dim=256, axes_dim=(16, 56, 56))
    model = init_weights(FluxTransformer(cfg), torch.Generator().manual_seed(seed))
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def flux_inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(3)
    return (torch.randn(1, 16, 8, 8, generator=g), torch.tensor([0.7]), torch.randn(1, 5, 256, generator=g),
            torch.randn(1, 256, generator=g), torch.tensor([3.5]))


def unet_q4k_config():  # noqa: ANN201
    """A one-level UNet 256 channels wide (rows of 256 for Q4_K in its linear projections)."""
    from nodes.diffusion.models.unet_config import UNetConfig

    return UNetConfig(in_channels=4, out_channels=4, model_channels=256, channel_mult=(1,), num_res_blocks=(1,),
                      transformer_depth=(1,), transformer_depth_middle=1, transformer_depth_output=(1, 1),
                      context_dim=256, use_linear_in_transformer=True, num_head_channels=64)


def unet_state(qtype: int) -> tuple[dict[str, torch.Tensor], int]:
    """(weights, context width): the tiny SD1 UNet for Q8_0 (its 3x3 convs are 288 = 9 blocks wide),
    the 256-wide one for Q4_K."""
    if qtype == Q8_0:
        cfg, sd = make_unet("sd1")
        return sd, cfg.context_dim
    from nodes.diffusion.models.unet import UNetModel
    from tests.diffusion.ldm_fixtures import randomize_

    return {k: v.contiguous() for k, v in randomize_(UNetModel(unet_q4k_config()), 0).state_dict().items()}, 256


def load_unet_node(models: Path, out: Path, name: str, weight_dtype: str = "default"):  # noqa: ANN201
    g = Graph()
    g.add_node("diffusion.unet_loader", {"unet_name": name, "weight_dtype": weight_dtype}, id="unet")
    report = executor(models, out).run(g, outputs=["unet"])
    report.raise_for_status()
    return report.results["unet"]["MODEL"]


def reference_model(sd: dict[str, torch.Tensor], like: torch.nn.Module) -> torch.nn.Module:
    """A plain fp32 copy of ``like``'s architecture holding ``sd``."""
    import copy

    from nodes.diffusion.models.loading import assign_weights, build_on_meta

    cls = type(like)
    model = build_on_meta(cls, copy.deepcopy(like.config))
    return assign_weights(model, sd, name="reference", dtype=torch.float32)


@pytest.mark.parametrize("qtype", [Q8_0, Q4_K], ids=["Q8_0", "Q4_K"])
@pytest.mark.parametrize("family", ["flux", "unet"])
def test_gguf_diffusion_model_through_the_loader_node(tmp_path: Path, family: str, qtype: int) -> None:
    models = tmp_path / "models"
    (models / "unet").mkdir(parents=True)  # ComfyUI-GGUF's folder
    if family == "flux":
        sd, arch = flux_state(), "flux"
    else:
        sd, context = unet_state(qtype)
        arch = "sd1"
    path = models / "unet" / f"tiny-{family}-{qtype}.gguf"
    write_gguf(path, {k: v.numpy() for k, v in sd.items()}, qtype, arch=arch)
    model = load_unet_node(models, tmp_path / "out", path.name)
    net = model.unet
    layers = list(quantized_layers(net))
    assert layers and all(m.qformat == "gguf" and m.qtype == qtype for _, m in layers)
    assert tensor_bytes(net) < 0.4 * sum(v.numel() * 4 for v in sd.values())  # stays quantized in memory
    stored = read_gguf(path).state_dict
    dequantized = reference_model(dequantize_state_dict(stored, torch.float32), net)
    original = reference_model(sd, net)
    noisy = reference_model(noise_equivalent(sd, stored), net)
    with torch.inference_mode():
        if family == "flux":
            args = flux_inputs()
        else:
            g = torch.Generator().manual_seed(3)
            args = (torch.randn(1, 4, 8, 8, generator=g), torch.tensor([500.0]),
                    torch.randn(1, 7, context, generator=g))
        got, ref, orig, perturbed = net(*args), dequantized(*args), original(*args), noisy(*args)
    width = 256 if family == "flux" or qtype == Q4_K else 64
    # same weights expanded per layer vs expanded once: fp32 rounding only
    assert rel_err(got, ref) <= rounding_rtol(torch.float32, reduction=4 * width, depth=8)
    # the quantization's own error (what random weight noise of its size does, with the usual safety
    # factor; a dequantization bug is O(1)), and not zero
    assert 0 < rel_err(got, orig) <= SIGMAS * rel_err(perturbed, orig)


def test_gguf_model_runs_through_the_sampler_under_a_budget(tmp_path: Path) -> None:
    """A Q8_0 UNet from models/unet/*.gguf in a txt2img graph: the full sampler path, streamed at a
    third of its size, equal to the unbudgeted run."""
    models = tmp_path / "models"
    ckpt = write_tiny_checkpoint(models, "sd1")
    unet = {k.removeprefix("model.diffusion_model."): v for k, v in ckpt.tensors.items()
            if k.startswith("model.diffusion_model.")}
    (models / "unet").mkdir()
    write_gguf(models / "unet" / "tiny-sd1-Q8_0.gguf", {k: v.numpy() for k, v in unet.items()}, Q8_0, arch="sd1")
    graph = txt2img_graph(ckpt.name, steps=2)
    graph.add_node("diffusion.unet_loader", {"unet_name": "tiny-sd1-Q8_0.gguf", "weight_dtype": "default"},
                   id="gguf")
    graph.connect("gguf", "MODEL", "sampler", "model")
    full = executor(models, tmp_path / "a").run(graph, outputs=["gguf", "sampler"])
    full.raise_for_status()
    size = full.stats["memory"]["resident"]
    assert size == tensor_bytes(full.results["gguf"]["MODEL"].unet)
    ex = executor(models, tmp_path / "b")
    ex.run(graph, outputs=["positive", "negative"]).raise_for_status()  # (the tiny CLIP's embedding > budget)
    ex.settings["vram_budget"] = str(size // 3)
    budgeted = ex.run(graph, outputs=["sampler"])
    budgeted.raise_for_status()
    assert budgeted.stats["memory"]["peak"] <= size // 3 and budgeted.stats["memory"]["streamed_blocks"] > 0
    assert torch.equal(budgeted.results["sampler"]["LATENT"].samples, full.results["sampler"]["LATENT"].samples)


@pytest.mark.parametrize("weight_dtype", ["fp8_e4m3fn", "fp8_e5m2"])
def test_weight_dtype_on_a_unet(tmp_path: Path, weight_dtype: str) -> None:
    cfg, sd = make_unet("sd1")
    models = tmp_path / "models"
    (models / "diffusion_models").mkdir(parents=True)
    save_file(sd, models / "diffusion_models" / "unet.safetensors")
    model = load_unet_node(models, tmp_path / "out", "unet.safetensors", weight_dtype)
    fp8 = getattr(torch, weight_dtype.replace("fp8_", "float8_"))
    layers = [m for _, m in quantized_layers(model.unet)]
    convs_and_linears = [m for m in model.unet.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == len(convs_and_linears) and all(m.storage.dtype == fp8 for m in layers)
    full = load_unet_node(models, tmp_path / "out2", "unet.safetensors")
    g = torch.Generator().manual_seed(3)
    args = (torch.randn(1, 4, 8, 8, generator=g), torch.tensor([500.0]), torch.randn(1, 7, cfg.context_dim,
                                                                                     generator=g))
    with torch.inference_mode():
        got, ref = model.unet(*args), full.unet(*args)
    mantissa = 3 if weight_dtype == "fp8_e4m3fn" else 2
    assert 0 < rel_err(got, ref) <= 4 * 2.0 ** -mantissa  # the format's own rounding, through the net


def test_fp8_and_scaled_fp8_files_keep_their_bytes(tmp_path: Path) -> None:
    """An fp8 file's resident bytes are its tensor bytes; ComfyUI's scaled fp8 (marker + per-tensor
    scale_weight) loads and matches the upcast weights."""
    sd = flux_state(seed=1)
    models = tmp_path / "models"
    (models / "diffusion_models").mkdir(parents=True)
    fp8 = {k: v.to(torch.float8_e4m3fn) if v.ndim >= 2 else v for k, v in sd.items()}
    save_file(fp8, models / "diffusion_models" / "fp8.safetensors")
    scaled: dict[str, torch.Tensor] = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    for k, v in sd.items():
        if v.ndim >= 2:
            s = v.abs().max() / torch.finfo(torch.float8_e4m3fn).max
            scaled[k], scaled[k.removesuffix("weight") + "scale_weight"] = (v / s).to(torch.float8_e4m3fn), s
        else:
            scaled[k] = v
    save_file(scaled, models / "diffusion_models" / "scaled.safetensors")
    plain = load_unet_node(models, tmp_path / "o1", "fp8.safetensors")
    assert tensor_bytes(plain.unet) == sum(v.numel() * v.element_size() for v in fp8.values())
    model = load_unet_node(models, tmp_path / "o2", "scaled.safetensors")
    assert tensor_bytes(model.unet) == sum(v.numel() * v.element_size() for k, v in scaled.items()
                                           if k != "scaled_fp8")
    upcast = {k: v.float() * scaled[k.removesuffix("weight") + "scale_weight"] if v.dtype == torch.float8_e4m3fn
              else v for k, v in scaled.items() if k != "scaled_fp8" and not k.endswith("scale_weight")}
    reference = reference_model(upcast, model.unet)
    with torch.inference_mode():
        got, ref = model.unet(*flux_inputs()), reference(*flux_inputs())
    assert rel_err(got, ref) <= rounding_rtol(torch.float32, reduction=1024, depth=8)


# ------------------------------------------------------------------ text encoders


def test_t5_gguf_in_the_clip_folder(tmp_path: Path) -> None:
    """A T5 encoder as GGUF with llama.cpp's tensor names in models/clip/ (ComfyUI-GGUF's convention)
    encodes like the safetensors file it was made from, within Q8_0's error."""
    from nodes.diffusion.quant.gguf_file import _T5_BLOCK_PARTS, _T5_TOP
    from tests.diffusion.flux_pipeline_fixtures import flux_graph, write_flux_files

    files = write_flux_files(tmp_path / "models")
    models = files.models_dir
    t5 = load_file(models / "text_encoders" / files.t5)
    to_llama = {v: k for k, v in _T5_TOP.items()}
    names = {}
    for key in t5:
        stem, leaf = key.rsplit(".", 1)
        if stem in to_llama:
            names[key] = f"{to_llama[stem]}.{leaf}"
            continue
        parts = stem.split(".")
        rest = ".".join(parts[3:])
        part = next(p for p, hf in _T5_BLOCK_PARTS.items() if hf == rest)
        names[key] = f"enc.blk.{parts[2]}.{part}.{leaf}"
    (models / "clip").mkdir()
    write_gguf(models / "clip" / "t5-Q8_0.gguf", {names[k]: v.numpy() for k, v in t5.items()}, Q8_0, arch="t5encoder")
    shutil.copy(models / "text_encoders" / "tiny_t5xxl.tokenizer.json", models / "clip" / "t5-Q8_0.tokenizer.json")
    graph = flux_graph(files, steps=1)
    ex = make_executor(models, tmp_path / "out")
    base = ex.run(graph, outputs=["positive"])
    graph.node("clip").values["clip_name2"] = "t5-Q8_0.gguf"
    report = ex.run(graph, outputs=["clip", "positive"])
    report.raise_for_status()
    encoder = report.results["clip"]["CLIP"].encoders[-1]
    assert any(m.qtype == Q8_0 for _, m in quantized_layers(encoder))
    got, ref = report.results["positive"]["CONDITIONING"], base.results["positive"]["CONDITIONING"]
    from nodes.diffusion.quant.gguf_file import text_encoder_state_dict

    stored = text_encoder_state_dict(read_gguf(models / "clip" / "t5-Q8_0.gguf"))
    save_file(noise_equivalent(t5, stored), models / "clip" / "t5-noisy.safetensors")
    shutil.copy(models / "text_encoders" / "tiny_t5xxl.tokenizer.json", models / "clip" / "t5-noisy.tokenizer.json")
    graph.node("clip").values["clip_name2"] = "t5-noisy.safetensors"
    noisy = ex.run(graph, outputs=["positive"]).results["positive"]["CONDITIONING"]
    assert 0 < rel_err(got.context, ref.context) <= SIGMAS * rel_err(noisy.context, ref.context)


# ------------------------------------------------------------------ LoRA on quantized weights


def test_lora_on_a_gguf_flux_model_is_applied_at_compute(tmp_path: Path) -> None:
    from nodes.diffusion.models.lora import apply_lora

    sd = flux_state()
    path = tmp_path / "flux.gguf"
    write_gguf(path, {k: v.numpy() for k, v in sd.items()}, Q8_0, arch="flux")
    models = tmp_path / "models"
    (models / "unet").mkdir(parents=True)
    shutil.copy(path, models / "unet" / path.name)
    base = load_unet_node(models, tmp_path / "out", path.name).unet
    g = torch.Generator().manual_seed(5)
    lora = {"lora_unet_double_blocks_0_img_attn_proj.lora_down.weight": torch.randn(4, 256, generator=g) * 0.1,
            "lora_unet_double_blocks_0_img_attn_proj.lora_up.weight": torch.randn(256, 4, generator=g) * 0.1,
            "lora_unet_single_blocks_0_linear2.lora_down.weight": torch.randn(4, 1280, generator=g) * 0.1,
            "lora_unet_single_blocks_0_linear2.lora_up.weight": torch.randn(256, 4, generator=g) * 0.1}
    patched = apply_lora(base, None, lora, 0.8, 0.0).unet
    target = patched.get_submodule("double_blocks.0.img_attn.proj")
    assert target.qformat == "gguf" and len(target.lora) == 1  # not merged: quantized bytes untouched
    assert target.storage is base.get_submodule("double_blocks.0.img_attn.proj").storage
    assert base.get_submodule("double_blocks.0.img_attn.proj").lora == ()  # the cached base is untouched
    dequantized = reference_model(dequantize_state_dict(read_gguf(path).state_dict, torch.float32), base)
    merged = apply_lora(dequantized, None, lora, 0.8, 0.0).unet
    with torch.inference_mode():
        got, ref, before = patched(*flux_inputs()), merged(*flux_inputs()), base(*flux_inputs())
    assert rel_err(got, ref) <= rounding_rtol(torch.float32, reduction=1024, depth=8)
    assert rel_err(got, before) > 1e-3


# ------------------------------------------------------------------ bad files


def test_truncated_and_wrong_gguf_files_are_validation_errors(tmp_path: Path) -> None:
    from nodes.diffusion.models.t5 import T5Encoder  # noqa: F401  (the encoder kind named below)

    sd = flux_state()
    models = tmp_path / "models"
    (models / "unet").mkdir(parents=True)
    good = models / "unet" / "flux.gguf"
    write_gguf(good, {k: v.numpy() for k, v in sd.items()}, Q8_0, arch="flux")
    data = good.read_bytes()
    (models / "unet" / "cut.gguf").write_bytes(data[: len(data) // 2])
    t5 = {"shared.weight": np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)}
    for part in ("q", "k", "v", "o"):
        t5[f"encoder.block.0.layer.0.SelfAttention.{part}.weight"] = np.zeros((32, 32), np.float32)
    t5["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = np.zeros((32, 4), np.float32)
    write_gguf(models / "unet" / "t5.gguf", t5, Q8_0, arch="t5encoder")
    for name, says, fix in (("cut.gguf", "truncated", "re-download"),
                            ("t5.gguf", "T5 text encoder", "models/text_encoders/")):
        g = Graph()
        g.add_node("diffusion.unet_loader", {"unet_name": name, "weight_dtype": "default"}, id="unet")
        with pytest.raises(WorkflowInvalid) as info:
            executor(models, tmp_path / "out").run(g, outputs=["unet"])
        (issue,) = info.value.issues
        assert (issue.node_id, issue.input) == ("unet", "unet_name")
        assert says in issue.message and fix in (issue.fix or "") and "Traceback" not in issue.message


def test_clip_gguf_with_load_clip(tmp_path: Path) -> None:
    """A CLIP-L text encoder as Q8_0 GGUF in models/clip/ through Load CLIP: quantized layers, and the
    prompt encodes within the error that weight noise of the quantization's size gives."""
    from tests.diffusion.text_fixtures import make_hf_clip_sd

    models = tmp_path / "models"
    (models / "clip").mkdir(parents=True)
    sd = make_hf_clip_sd("", width=64, layers=2, seed=4)
    save_file(sd, models / "clip" / "clip_l.safetensors")
    write_gguf(models / "clip" / "clip_l-Q8_0.gguf", {k: v.numpy() for k, v in sd.items()}, Q8_0, arch="clip")
    stored = read_gguf(models / "clip" / "clip_l-Q8_0.gguf").state_dict
    save_file(noise_equivalent(sd, stored), models / "clip" / "clip_l-noisy.safetensors")

    def encode(name: str):  # noqa: ANN202
        g = Graph()
        g.add_node("diffusion.clip_loader", {"clip_name": name, "type": "stable_diffusion"}, id="clip")
        g.add_node("diffusion.text_encode", {"text": "a red fox in the snow"}, id="positive")
        g.connect("clip", "CLIP", "positive", "clip")
        report = executor(models, tmp_path / "out").run(g, outputs=["clip", "positive"])
        report.raise_for_status()
        return report.results["clip"]["CLIP"], report.results["positive"]["CONDITIONING"]

    clip, got = encode("clip_l-Q8_0.gguf")
    assert any(m.qtype == Q8_0 for _, m in quantized_layers(clip.encoders[0]))
    _, ref = encode("clip_l.safetensors")
    _, noisy = encode("clip_l-noisy.safetensors")
    assert 0 < rel_err(got.context, ref.context) <= SIGMAS * rel_err(noisy.context, ref.context)


def test_sd3_gguf_through_the_sampler(tmp_path: Path) -> None:
    """An SD3-layout MMDiT as Q8_0 GGUF (keys under ``model.diffusion_model.``, as ComfyUI-GGUF writes
    them) through Load Diffusion Model, TripleCLIPLoader and KSampler: within the error weight noise of
    the quantization's size gives, against the safetensors file it was made from."""
    from tests.diffusion.sd3_pipeline_fixtures import sd3_graph, write_sd3_files

    files = write_sd3_files(tmp_path / "models")
    models = files.models_dir
    sd = load_file(models / "diffusion_models" / files.unet)
    (models / "unet").mkdir()
    write_gguf(models / "unet" / "sd3-Q8_0.gguf", {k: v.numpy() for k, v in sd.items()}, Q8_0, arch="sd3")
    stored = read_gguf(models / "unet" / "sd3-Q8_0.gguf").state_dict
    bare = {k.removeprefix("model.diffusion_model."): v for k, v in sd.items()}
    save_file(noise_equivalent(bare, stored), models / "diffusion_models" / "sd3-noisy.safetensors")
    ex = make_executor(models, tmp_path / "out")

    def sample(unet: str) -> torch.Tensor:
        graph = sd3_graph(files, steps=2)
        graph.node("unet").values["unet_name"] = unet
        report = ex.run(graph, outputs=["sampler"])
        report.raise_for_status()
        return report.results["sampler"]["LATENT"].samples

    got, ref, noisy = sample("sd3-Q8_0.gguf"), sample(files.unet), sample("sd3-noisy.safetensors")
    assert 0 < rel_err(got, ref) <= SIGMAS * rel_err(noisy, ref)


def test_peak_is_per_run(tmp_path: Path) -> None:
    """The reported peak is the run's: a later run that only samples (prompts cached) peaks at the
    resident UNet, below the first run's peak, which the tiny text encoder (its 49408-token embedding
    is larger than the UNet) set while encoding."""
    models = tmp_path / "models"
    ckpt = write_tiny_checkpoint(models, "sd1")
    ex = executor(models, tmp_path / "out", vram_budget="1G")
    first = ex.run(txt2img_graph(ckpt.name, steps=1), outputs=["ckpt", "sampler"])
    first.raise_for_status()
    unet_bytes = tensor_bytes(first.results["ckpt"]["MODEL"].unet)
    encoder_bytes = tensor_bytes(first.results["ckpt"]["CLIP"].encoders[0])
    assert first.stats["memory"]["peak"] == max(unet_bytes, encoder_bytes) > unet_bytes
    again = ex.run(txt2img_graph(ckpt.name, steps=1, seed=7), outputs=["sampler"])
    assert again.nodes["positive"].status == "cached" and again.stats["memory"]["peak"] == unet_bytes


def test_load_checkpoint_keeps_unet_and_text_encoder_at_home_for_the_manager(tmp_path):
    """On a GPU the all-in-one loader must leave the UNet and text encoder in RAM (their home) so the
    device-memory manager moves them under its budget, as the split loaders do; they still compute on
    the device.  The meta device stands in for a GPU here (no VAE in the file: a VAE stays on the device)."""
    from nodes.diffusion.checkpoint import load_checkpoint
    from tests.diffusion.pipeline_fixtures import build_checkpoint

    _, flat, _ = build_checkpoint("sd1", 0, 4)
    no_vae = tuple(k for k in flat if k.startswith("first_stage_model."))
    path = write_tiny_checkpoint(tmp_path, "sd1", drop_keys=no_vae).path
    ckpt = load_checkpoint(path, device=torch.device("meta"), home="cpu")
    assert ckpt.model.device.type == "meta" and ckpt.clip.device.type == "meta"  # where they compute
    assert {p.device.type for p in ckpt.model.unet.parameters()} == {"cpu"}  # where they live
    assert {p.device.type for e in ckpt.clip.encoders for p in e.parameters()} == {"cpu"}
    without_home = load_checkpoint(path, device="cpu")  # no home: weights where they compute, as before
    assert {p.device.type for p in without_home.model.unet.parameters()} == {"cpu"}
