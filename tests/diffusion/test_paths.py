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


def _yaml(folder: Path, target: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "extra_model_paths.yaml"
    path.write_text(f"other:\n    base_path: {target}\n    loras: Lora\n")
    return path


def test_extra_model_paths_in_the_current_directory_is_ignored(tmp_path: Path, monkeypatch) -> None:
    """A downloaded bundle's YAML must not redirect the loaders just because the user cd'ed into it."""
    bundle = tmp_path / "bundle"
    _touch(tmp_path / "elsewhere" / "Lora" / "planted.safetensors")
    _yaml(bundle, tmp_path / "elsewhere")
    monkeypatch.chdir(bundle)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("NODEGRAPH_MODELS_DIR", raising=False)
    assert ModelPaths.from_settings({"include_demo_models": False}).list("loras") == []


def test_extra_model_paths_from_models_folder_and_user_config_and_the_cli_says_so(
        tmp_path: Path, monkeypatch, capsys) -> None:
    from nodegraph.cli import main

    root = tmp_path / "models"
    _touch(tmp_path / "a" / "Lora" / "from_models.safetensors")
    _touch(tmp_path / "b" / "Lora" / "from_config.safetensors")
    in_models = _yaml(root, tmp_path / "a")
    in_config = _yaml(tmp_path / "config" / "nodegraph", tmp_path / "b")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    main(["nodes", "--json", "--models-dir", str(tmp_path / "other_models")])
    err = capsys.readouterr().err
    assert f"nodegraph: model folders also from {in_config.resolve()}" in err
    assert str(in_models) not in err
    main(["nodes", "--json", "--models-dir", str(root)])
    assert f"model folders also from {in_models.resolve()}" in capsys.readouterr().err
    paths = ModelPaths.from_settings({"models_dir": str(root), "include_demo_models": False})
    assert sorted(paths.list("loras")) == ["from_config.safetensors", "from_models.safetensors"]
