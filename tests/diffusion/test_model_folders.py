"""The model-folder table (nodes/shared/model_paths.py): one row per kind drives the folders
searched under models_dir and the extra_model_paths.yaml keys, so a new kind is one row."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodes.shared import model_paths
from nodes.shared.model_paths import Folder, ModelPaths


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def test_a_row_with_several_folders_and_an_alias(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A kind ComfyUI keeps in two folders (new name first, old name second) and a yaml alias.
    row = Folder("diffusion_models", subdirs=("diffusion_models", "unet"), aliases=("unet",))
    monkeypatch.setitem(model_paths._BY_KIND, row.kind, row)
    for key in (row.kind, *row.aliases):
        monkeypatch.setitem(model_paths._YAML_KEYS, key, row.kind)
    root = tmp_path / "models"
    _touch(root / "diffusion_models" / "new.safetensors")
    _touch(root / "unet" / "old.safetensors")
    _touch(root / "unet" / "new.safetensors")  # shadowed: the first folder wins
    other = tmp_path / "webui"
    _touch(other / "Unet" / "extra.safetensors")
    (tmp_path / "extra_model_paths.yaml").write_text(f"a:\n  base_path: {other}\n  unet: Unet\n", encoding="utf-8")
    paths = ModelPaths.from_settings({"models_dir": str(root), "include_demo_models": False})
    assert paths.dirs("diffusion_models") == [root / "diffusion_models", root / "unet", other / "Unet"]
    assert paths.list("diffusion_models") == ["new.safetensors", "old.safetensors", "extra.safetensors"]
    assert paths.resolve("diffusion_models", "new.safetensors") == root / "diffusion_models" / "new.safetensors"


def test_yaml_aliases_come_from_the_rows(tmp_path: Path) -> None:
    other = tmp_path / "a1111"
    _touch(other / "Lora" / "style.safetensors")
    _touch(other / "ESRGAN" / "4x.pth")
    (tmp_path / "extra_model_paths.yaml").write_text(
        f"a:\n  base_path: {other}\n  lora: Lora\n  upscale: ESRGAN\n  clip_vision: ignored\n", encoding="utf-8")
    paths = ModelPaths.from_settings({"models_dir": str(tmp_path / "models"), "include_demo_models": False})
    assert paths.list("loras") == ["style.safetensors"]
    assert paths.list("upscale_models") == ["4x.pth"]
    with pytest.raises(ValueError, match="unknown model kind 'clip_vision'"):
        paths.dirs("clip_vision")


def test_every_kind_is_one_row() -> None:
    assert model_paths.KINDS == tuple(f.kind for f in model_paths.FOLDERS)
    assert len(set(model_paths.KINDS)) == len(model_paths.KINDS)
