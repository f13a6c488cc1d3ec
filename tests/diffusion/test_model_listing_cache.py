"""Model-folder listings are cached by folder mtime (issue 20: the editor validates after
every edit, and listing thousands of files each time stalled it) and list the same names,
in the same order, as a plain ``rglob``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from nodes.shared import model_paths as paths
from nodes.shared.model_paths import MODEL_EXTENSIONS, ModelPaths


def reference(root: Path) -> list[str]:
    """The listing before the cache: every model file under root, as rglob orders them."""
    return [p.relative_to(root).as_posix() for p in sorted(root.rglob("*"))
            if p.suffix.lower() in MODEL_EXTENSIONS and p.is_file()]


def age(folder: Path, seconds: float = 100.0) -> None:
    """Make a folder look last modified ``seconds`` ago (older than the racy window)."""
    t = time.time() - seconds
    for d in [folder, *(p for p in folder.rglob("*") if p.is_dir() and not p.is_symlink())]:
        os.utime(d, (t, t))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    ck = root / "checkpoints"
    for rel in ["b.safetensors", "a.ckpt", "A.PT", "notes.txt", "sd1/x.safetensors", "sd1/deep/y.bin",
                "sd1.safetensors", "zz/readme.md", ".hidden.safetensors"]:
        p = ck / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
    (ck / "folder.safetensors").mkdir()  # a folder with a model's suffix is not a model file
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "linked_dir_model.safetensors").write_bytes(b"")
    (ck / "linked").symlink_to(outside, target_is_directory=True)  # rglob does not descend into it
    (ck / "link.safetensors").symlink_to(outside / "linked_dir_model.safetensors")  # a linked file counts
    return root


def test_same_names_and_order_as_rglob(tree: Path) -> None:
    mp = ModelPaths(tree, include_demo=False)
    assert mp.list("checkpoints") == reference(tree / "checkpoints")
    age(tree)
    assert mp.list("checkpoints") == reference(tree / "checkpoints")  # from the cache, same answer
    assert mp.list("checkpoints", folders=True) == sorted(
        p.name for p in (tree / "checkpoints").iterdir() if p.is_dir())
    assert mp.list("vae") == []  # a missing folder lists nothing


def test_unchanged_folders_are_not_listed_again_and_changes_are_seen(tree: Path, monkeypatch) -> None:
    mp = ModelPaths(tree, include_demo=False)
    age(tree)
    first = mp.list("checkpoints")
    scans = []
    real = os.scandir
    monkeypatch.setattr(paths.os, "scandir", lambda p: (scans.append(p), real(p))[1])
    assert mp.list("checkpoints") == first and scans == []  # nothing re-read
    (tree / "checkpoints" / "sd1" / "new.safetensors").write_bytes(b"")  # changes sd1's mtime
    again = mp.list("checkpoints")
    assert scans == [os.fspath(tree / "checkpoints" / "sd1")]  # only the changed folder was re-read
    assert "sd1/new.safetensors" in again and again == reference(tree / "checkpoints")
    (tree / "checkpoints" / "b.safetensors").unlink()
    assert "b.safetensors" not in mp.list("checkpoints")


def test_recently_changed_folders_are_not_cached(tree: Path, monkeypatch) -> None:
    mp = ModelPaths(tree, include_demo=False)
    mp.list("checkpoints")  # the folders were just written: inside the racy window
    scans = []
    real = os.scandir
    monkeypatch.setattr(paths.os, "scandir", lambda p: (scans.append(p), real(p))[1])
    mp.list("checkpoints")
    assert os.fspath(tree / "checkpoints") in scans
