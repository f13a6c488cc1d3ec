"""Model folders: ComfyUI layout, extra_model_paths.yaml, demo models, and safe name resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodes.diffusion.paths import DEMO_DIR, ModelNotFound, ModelPaths, choices_for


def _touch(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


def test_lists_files_of_each_kind_recursively_with_posix_names(tmp_path: Path) -> None:
    root = tmp_path / "models"
    _touch(root / "checkpoints" / "b.safetensors")
    _touch(root / "checkpoints" / "sub" / "a.ckpt")
    _touch(root / "checkpoints" / "notes.txt")
    _touch(root / "loras" / "style.safetensors")
    paths = ModelPaths.from_settings({"models_dir": str(root), "include_demo_models": False})
    assert paths.list("checkpoints") == ["b.safetensors", "sub/a.ckpt"]
    assert paths.list("loras") == ["style.safetensors"]
    assert paths.resolve("checkpoints", "sub/a.ckpt") == root / "checkpoints" / "sub" / "a.ckpt"
    assert choices_for("loras")({"models_dir": str(root), "include_demo_models": False}) == ["style.safetensors"]


def test_extra_model_paths_yaml_in_comfyui_format(tmp_path: Path) -> None:
    a1111 = tmp_path / "sd-webui"
    _touch(a1111 / "models" / "Stable-diffusion" / "webui.safetensors")
    _touch(a1111 / "models" / "Lora" / "l1.safetensors")
    _touch(a1111 / "models" / "LyCORIS" / "l2.safetensors")
    _touch(a1111 / "models" / "ESRGAN" / "4x.pth")
    root = tmp_path / "models"
    _touch(root / "checkpoints" / "local.safetensors")
    (tmp_path / "extra_model_paths.yaml").write_text(
        "a111:\n"
        f"    base_path: {a1111}\n"
        "    checkpoints: models/Stable-diffusion\n"
        "    loras: |\n"
        "         models/Lora\n"
        "         models/LyCORIS\n"
        "    upscale_models: models/ESRGAN\n"
        "    embeddings: embeddings\n"
        "comfy_relative:\n"
        "    base_path: ./\n"
        "    is_default: true\n"
    )
    paths = ModelPaths.from_settings({"models_dir": str(root), "include_demo_models": False})
    assert paths.list("checkpoints") == ["local.safetensors", "webui.safetensors"]
    assert paths.list("loras") == ["l1.safetensors", "l2.safetensors"]
    assert paths.list("upscale_models") == ["4x.pth"]


def test_names_cannot_climb_out_of_their_folder(tmp_path: Path) -> None:
    root = tmp_path / "models"
    _touch(tmp_path / "secret.safetensors")
    paths = ModelPaths.from_settings({"models_dir": str(root), "include_demo_models": False})
    for name in ("../secret.safetensors", "../../secret.safetensors", str(tmp_path / "secret.safetensors")):
        with pytest.raises(ModelNotFound) as err:
            paths.resolve("checkpoints", name)
        assert str(root / "checkpoints") in str(err.value)


def test_demo_models_are_searched_last(tmp_path: Path) -> None:
    paths = ModelPaths.from_settings({"models_dir": str(tmp_path / "models")})
    assert paths.dirs("checkpoints")[-1] == DEMO_DIR / "checkpoints"
    assert DEMO_DIR / "checkpoints" not in ModelPaths.from_settings(
        {"models_dir": str(tmp_path), "include_demo_models": False}).dirs("checkpoints")


def test_unknown_kind_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown model kind"):
        ModelPaths.from_settings({"models_dir": str(tmp_path)}).dirs("weights")
