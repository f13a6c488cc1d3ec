"""Model folders: where loaders look for files, and the names they offer.

A service shared by every pack that loads model files (diffusion, upscale,
third-party packs): packs import this module, never each other.

Layout (ComfyUI's, so existing collections work as they are)::

    <models_dir>/checkpoints  vae  loras  controlnet  upscale_models  embeddings  diffusers  vae_approx
                 diffusion_models (or unet)  text_encoders (or clip)

Split-file models (FLUX and later transformer families) keep the diffusion
model, text encoders and VAE in ``diffusion_models/``, ``text_encoders/`` and
``vae/``; the older folder names ``unet/`` and ``clip/`` are searched too.

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

The kinds are one table (:data:`FOLDERS`), so adding a kind of model (or
another name ComfyUI uses for the same folder) is one row.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Folder:
    """One kind of model file.

    ``subdirs`` are the folders under ``models_dir`` searched for it, in order
    (default: the kind's own name); ``aliases`` are other keys an
    ``extra_model_paths.yaml`` may use for it (other tools' or older ComfyUI names).
    """

    kind: str
    subdirs: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()

    @property
    def dirs_under_root(self) -> tuple[str, ...]:
        return self.subdirs or (self.kind,)


#: Every kind of model folder, in the order tools list them.
FOLDERS: tuple[Folder, ...] = (
    Folder("checkpoints"),
    Folder("vae"),
    Folder("loras", aliases=("lora",)),
    Folder("controlnet", aliases=("t2i_adapter",)),
    Folder("upscale_models", aliases=("upscale",)),
    Folder("embeddings"),
    Folder("diffusers"),
    Folder("diffusion_models", subdirs=("diffusion_models", "unet"), aliases=("unet",)),
    Folder("text_encoders", subdirs=("text_encoders", "clip"), aliases=("clip",)),
    Folder("vae_approx"),  # TAESD preview decoders (taesd_decoder, taesdxl_decoder, ...)
)
_BY_KIND: dict[str, Folder] = {f.kind: f for f in FOLDERS}
KINDS = tuple(_BY_KIND)
# extra_model_paths.yaml key -> kind (a kind's own name and its aliases).
_YAML_KEYS: dict[str, str] = {key: f.kind for f in FOLDERS for key in (f.kind, *f.aliases)}
MODEL_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf")  # .gguf: ComfyUI-GGUF files
# The tiny demo models shipped with nodegraph (package data; found by path, not imported).
DEMO_DIR = Path(__file__).resolve().parent.parent / "diffusion" / "demo_models"


# folder -> (its mtime_ns, file names, [(sub-folder name, is a symlink)]) — see _scan.
_LISTINGS: dict[str, tuple[int, list[str], list[tuple[str, bool]]]] = {}
_LISTINGS_LOCK = threading.Lock()
_RACY_S = 2.0  # a folder changed this recently may change again within its mtime's resolution


def _scan(folder: Path) -> tuple[list[str], list[tuple[str, bool]]] | None:
    """Files and sub-folders directly inside ``folder`` (None if it is not a folder).

    Validation asks for the model lists after every edit in the editor; listing a folder
    of thousands of files (a stat per file) each time costs tens of milliseconds.  A
    folder's mtime changes whenever an entry is added, removed or renamed in it, so its
    listing is reused until then; a folder modified in the last two seconds is never
    cached, since a second change within the filesystem's mtime resolution would go unseen."""
    key = os.fspath(folder)
    try:
        st = os.stat(key)
    except OSError:
        return None
    with _LISTINGS_LOCK:
        hit = _LISTINGS.get(key)
    if hit is not None and hit[0] == st.st_mtime_ns:
        return hit[1], hit[2]
    files: list[str] = []
    dirs: list[tuple[str, bool]] = []
    try:
        with os.scandir(key) as entries:
            for e in entries:
                try:
                    if e.is_dir():
                        dirs.append((e.name, e.is_symlink()))
                    elif e.is_file():
                        files.append(e.name)
                except OSError:  # vanished or unreadable entry: not a model we can offer
                    continue
    except OSError:
        return None
    files.sort()
    dirs.sort()
    if time.time() - st.st_mtime_ns / 1e9 > _RACY_S:
        with _LISTINGS_LOCK:
            _LISTINGS[key] = (st.st_mtime_ns, files, dirs)
    return files, dirs


def _model_files(root: Path) -> list[str]:
    """Model files under ``root`` (recursively, not through symlinked folders, as
    ``Path.rglob``), relative with ``/``, in ``sorted(root.rglob("*"))`` order."""
    out: list[list[str]] = []
    stack: list[tuple[Path, list[str]]] = [(root, [])]
    while stack:
        folder, parts = stack.pop()
        listing = _scan(folder)
        if listing is None:
            continue
        files, dirs = listing
        out.extend(parts + [f] for f in files if os.path.splitext(f)[1].lower() in MODEL_EXTENSIONS)
        stack.extend((folder / d, parts + [d]) for d, link in dirs if not link)
    out.sort()
    return ["/".join(p) for p in out]


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
            kind = _YAML_KEYS.get(key)
            if kind is None:
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
        folder = _BY_KIND.get(kind)
        if folder is None:
            raise ValueError(f"unknown model kind {kind!r}; expected one of {tuple(_BY_KIND)}")
        out = [self.models_dir / sub for sub in folder.dirs_under_root]
        out += self.extra.get(kind, [])
        if self.include_demo:
            out.append(DEMO_DIR / kind)
        return out

    def list(self, kind: str, *, folders: bool = False) -> list[str]:
        """Names available for ``kind``: model files (or, with ``folders``, sub-folders
        such as diffusers-format models) relative to their search folder."""
        names: dict[str, None] = {}
        for d in self.dirs(kind):
            if folders:
                listing = _scan(d)
                for name, _link in listing[1] if listing is not None else []:
                    names.setdefault(name)
                continue
            for name in _model_files(d):
                names.setdefault(name)
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
    # Named in "file not found" validation messages, so a user knows where the file goes.
    provider.folder = " or ".join(f"{f}/" for f in _BY_KIND[kind].dirs_under_root)  # type: ignore[attr-defined]
    return provider


__all__ = ["DEMO_DIR", "FOLDERS", "KINDS", "MODEL_EXTENSIONS", "Folder", "ModelNotFound", "ModelPaths",
           "choices_for", "extra_paths_files", "user_config_dir"]
