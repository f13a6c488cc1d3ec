"""Model folders: where loaders look for files, and the names they offer.

Layout (ComfyUI's, so existing collections work as they are)::

    <models_dir>/checkpoints  vae  loras  controlnet  upscale_models  embeddings  diffusers

``models_dir`` comes from the run's settings (``--models-dir``), else the
``NODEGRAPH_MODELS_DIR`` environment variable, else ``./models``.  The demo
models shipped inside the package are always searched last, so a fresh
install has something to load.  An ``extra_model_paths.yaml`` in ComfyUI's
format adds more folders (e.g. an A1111 install); it is looked for in the
settings (``extra_model_paths``), in ``models_dir``, beside a ``models_dir`` the
user chose, and in the user's config folder — never in the current directory
(see :func:`extra_paths_files`).  Each file used is logged once.

Names offered to the user are paths relative to their folder with ``/``
separators; the first folder that has a name wins, in search order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("checkpoints", "vae", "loras", "controlnet", "upscale_models", "embeddings", "diffusers")
MODEL_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin")
DEMO_DIR = Path(__file__).resolve().parent / "demo_models"

# Folder names other tools use for the same kinds (ComfyUI aliases).
_ALIASES = {"clip_vision": None, "t2i_adapter": "controlnet", "lora": "loras", "upscale": "upscale_models"}


class ModelNotFound(FileNotFoundError):
    """A model name that no configured folder holds."""

    def __init__(self, kind: str, name: str, searched: list[Path]) -> None:
        self.kind, self.name, self.searched = kind, name, searched
        dirs = "\n".join(f"  {d}" for d in searched) or "  (no folders configured)"
        super().__init__(f"{kind} model {name!r} not found; searched:\n{dirs}")


def _parse_extra_paths(path: Path) -> dict[str, list[Path]]:
    """Read a ComfyUI ``extra_model_paths.yaml``: sections with ``base_path`` and
    one or more (newline-separated) folders per kind, relative to base_path."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read extra model paths: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected sections of 'kind: folder' entries")
    out: dict[str, list[Path]] = {}
    for section in doc.values():
        if not isinstance(section, dict):
            continue
        base = Path(os.path.expanduser(str(section.get("base_path", ""))))
        if not base.is_absolute():
            base = path.parent / base
        for key, value in section.items():
            if key in ("base_path", "is_default") or value is None:
                continue
            kind = _ALIASES.get(key, key)
            if kind not in KINDS:
                continue
            for line in str(value).splitlines():
                line = line.strip()
                if line:
                    p = Path(os.path.expanduser(line))
                    out.setdefault(kind, []).append(p if p.is_absolute() else base / p)
    return out


def user_config_dir() -> Path:
    """nodegraph's folder in the user's configuration (XDG on Linux, APPDATA on Windows)."""
    base = os.environ.get("APPDATA") if os.name == "nt" else os.environ.get("XDG_CONFIG_HOME")
    return Path(base or Path.home() / ".config") / "nodegraph"


def extra_paths_files(settings: Mapping[str, Any], root: Path, *, explicit_root: bool) -> list[Path]:
    """The ``extra_model_paths.yaml`` files to read, in order: the one named in the settings, the one
    in the models folder, beside a models folder the user chose (ComfyUI keeps it in its root), and
    the user's config folder.  Never the current directory: a downloaded bundle that ships a YAML
    could otherwise point the loaders anywhere without the user knowing."""
    candidates = []
    if settings.get("extra_model_paths"):
        candidates.append(Path(str(settings["extra_model_paths"])))
    candidates.append(root / "extra_model_paths.yaml")
    if explicit_root:
        candidates.append(root.parent / "extra_model_paths.yaml")
    candidates.append(user_config_dir() / "extra_model_paths.yaml")
    found: list[Path] = []
    for c in candidates:
        if c.is_file() and c.resolve() not in {f.resolve() for f in found}:
            found.append(c)
    return found


_announced: set[Path] = set()


def _announce(path: Path) -> None:
    """Say once per process which YAML adds model folders (the CLI shows the ``nodegraph`` logger)."""
    resolved = path.resolve()
    if resolved not in _announced:
        _announced.add(resolved)
        logging.getLogger("nodegraph.models").info("model folders also from %s", resolved)


@dataclass
class ModelPaths:
    """Resolved search folders for each kind of model."""

    models_dir: Path
    extra: dict[str, list[Path]] = field(default_factory=dict)
    include_demo: bool = True

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None = None) -> ModelPaths:
        settings = settings or {}
        configured = settings.get("models_dir") or os.environ.get("NODEGRAPH_MODELS_DIR")
        root = Path(str(configured or "models"))
        extra: dict[str, list[Path]] = {}
        for c in extra_paths_files(settings, root, explicit_root=bool(configured)):
            _announce(c)
            for kind, dirs in _parse_extra_paths(c).items():
                extra.setdefault(kind, []).extend(dirs)
        return cls(root, extra, bool(settings.get("include_demo_models", True)))

    def dirs(self, kind: str) -> list[Path]:
        if kind not in KINDS:
            raise ValueError(f"unknown model kind {kind!r}; expected one of {KINDS}")
        out = [self.models_dir / kind, *self.extra.get(kind, [])]
        if self.include_demo:
            out.append(DEMO_DIR / kind)
        return out

    def list(self, kind: str, *, folders: bool = False) -> list[str]:
        """Names available for ``kind``: model files (or, with ``folders``, sub-folders
        such as diffusers-format models) relative to their search folder."""
        names: dict[str, None] = {}
        for d in self.dirs(kind):
            if not d.is_dir():
                continue
            if folders:
                for p in sorted(d.iterdir()):
                    if p.is_dir():
                        names.setdefault(p.name)
                continue
            for p in sorted(d.rglob("*")):
                if p.suffix.lower() in MODEL_EXTENSIONS and p.is_file():
                    names.setdefault(p.relative_to(d).as_posix())
        return list(names)

    def resolve(self, kind: str, name: str) -> Path:
        """Path of model ``name``; refuses names that climb out of their folder."""
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts:
            raise ModelNotFound(kind, name, self.dirs(kind))
        for d in self.dirs(kind):
            p = d / rel
            if p.exists():
                return p
        raise ModelNotFound(kind, name, self.dirs(kind))


def choices_for(kind: str, *, folders: bool = False):  # noqa: ANN201 - returns a choices provider
    """A COMBO choices provider listing the files of ``kind`` for the run's settings."""

    def provider(settings: Mapping[str, Any]) -> list[str]:
        return ModelPaths.from_settings(settings).list(kind, folders=folders)

    provider.__name__ = f"{kind}_choices"
    return provider
