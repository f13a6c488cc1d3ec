"""ARCHITECTURE.md's layer table, checked: every module of a layer imports with the layers it may
not use blocked.

Each check runs in a fresh interpreter with a meta-path finder that refuses
(and records) any import outside what the layer may use, then imports every
module of the layer.  A refused import the module swallowed (``try: import
torch except ImportError``) is recorded too, so it fails the check as well.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Every pack folder under nodes/ (shared/ is the services packs use, not a pack): a pack added
# later is checked without editing this list.
PACKS = tuple(sorted(p.name for p in (ROOT / "nodes").iterdir()
                     if (p / "__init__.py").is_file() and p.name != "shared"))
# Third-party libraries the packs use from their node functions (never while registering).
HEAVY = ("torch", "numpy", "PIL", "cv2", "spandrel", "safetensors", "scipy", "torchsde", "einops", "yaml",
         "tokenizers")

# Runs in the child: install the blocker, import the modules, print what was refused.
_CHILD = r"""
import importlib, json, sys

cfg = json.loads(sys.argv[1])
allowed_top = set(cfg["allowed_top"])
blocked_prefixes = tuple(cfg["blocked_prefixes"])
refused = []

def _blocked(name):
    top = name.partition(".")[0]
    if any(name == p or name.startswith(p + ".") for p in blocked_prefixes):
        return True
    if cfg["stdlib_only"] and top not in sys.stdlib_module_names and top not in allowed_top:
        return True
    return False

_MACHINERY = ("importlib", "_frozen_importlib")

def _importer():
    f = sys._getframe(2)
    while f is not None and f.f_globals.get("__name__", "").startswith(_MACHINERY):
        f = f.f_back
    return f.f_globals.get("__name__", "?") if f is not None else "?"

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if _blocked(name):
            importer = _importer()
            # The stdlib probes for optional modules itself (copy.py tries Jython's 'org'): refuse, don't record.
            if importer.partition(".")[0] not in sys.stdlib_module_names:
                refused.append((name, importer, current))
            raise ModuleNotFoundError(f"layer violation: {name!r} imported by {current!r}", name=name)
        return None

current = None
sys.meta_path.insert(0, Blocker())
errors = []
for mod in cfg["modules"]:
    current = mod
    try:
        importlib.import_module(mod)
    except Exception as exc:
        errors.append((mod, f"{type(exc).__name__}: {exc}"))
if cfg["register"]:
    current = "register()"
    from nodegraph.registry import Registry
    try:
        importlib.import_module(cfg["register"]).register(Registry())
    except Exception as exc:
        errors.append(("register()", f"{type(exc).__name__}: {exc}"))
print(json.dumps({"refused": refused, "errors": errors}))
"""


def _modules(package: str) -> list[str]:
    base = ROOT / package.replace(".", "/")
    out = []
    for path in sorted(base.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append(".".join(parts))
    return out


def _check(modules: list[str], *, blocked: list[str], stdlib_only: bool = False, allowed_top: tuple[str, ...] = (),
           register: str = "") -> None:
    cfg = {"modules": modules, "blocked_prefixes": blocked, "stdlib_only": stdlib_only,
           "allowed_top": list(allowed_top), "register": register}
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(cfg)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                                                       "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["errors"] == [], report["errors"]
    assert report["refused"] == [], f"imports outside the layer (module, by, while importing): {report['refused']}"


def test_every_engine_module_imports_with_stdlib_only() -> None:
    """nodegraph/: stdlib only at import time -- no pack, no GUI, no Qt, no torch, nothing installed."""
    modules = _modules("nodegraph")
    assert "nodegraph.comfy.mapping" in modules and "nodegraph.pngtext" in modules
    _check(modules, blocked=["nodes", "gui"], stdlib_only=True, allowed_top=("nodegraph",))


@pytest.mark.parametrize("pack", PACKS)
def test_every_pack_module_imports_without_other_packs(pack: str) -> None:
    """nodes/<pack>/: nodegraph, the shared services and its own libraries -- never another pack or the GUI."""
    others = [f"nodes.{p}" for p in PACKS if p != pack]
    _check(_modules(f"nodes.{pack}"), blocked=[*others, "gui", "PySide6"])


@pytest.mark.parametrize("pack", PACKS)
def test_pack_registers_without_heavy_libraries(pack: str) -> None:
    """Importing and registering a pack loads none of its heavy libraries (they load when a node runs)."""
    entry = "nodes.diffusion.pack" if pack == "diffusion" else f"nodes.{pack}"
    others = [f"nodes.{p}" for p in PACKS if p != pack]
    _check([entry], blocked=[*others, "gui", "PySide6", *HEAVY], register=entry)


def test_shared_services_import_without_packs() -> None:
    """nodes/shared/: used by packs, imports none (and nothing heavy at import time)."""
    _check(_modules("nodes.shared"), blocked=[*(f"nodes.{p}" for p in PACKS), "gui", "PySide6", *HEAVY])


def test_gui_modules_import_without_packs_or_torch() -> None:
    """gui/: nodegraph and Qt; packs arrive through the registry, models run in the engine's nodes."""
    _check(_modules("gui"), blocked=["nodes", "torch"])


def test_engine_source_names_no_pack_node_type() -> None:
    """What a pack's node types are called is the pack's business: no engine module spells one
    (the ComfyUI table, reroute and fix-ups used to)."""
    from nodegraph import Registry

    types = {spec.type_id for spec in Registry.with_installed_packs(strict=True)}
    assert "diffusion.ksampler" in types and "primitives.reroute" in types
    found = []
    for path in sorted((ROOT / "nodegraph").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        found += [(path.relative_to(ROOT).as_posix(), t) for t in types if f'"{t}"' in text or f"'{t}'" in text]
    assert found == []


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module an import statement in ``path`` names, at any depth (function bodies too),
    relative imports resolved against the file's package."""
    package = list(path.relative_to(ROOT).with_suffix("").parts)[:-1]  # a module's (or __init__'s) package
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join([*base, node.module] if node.module else base)
            found.append((node.lineno, name))
            found += [(node.lineno, f"{name}.{a.name}") for a in node.names if not node.module]
    return found


def test_packs_import_no_other_pack_even_lazily() -> None:
    """The import checks above see what loads at import time; node functions import their heavy
    code lazily, so a pack reaching into another from inside a function would slip past them."""
    assert {"primitives", "diffusion", "image", "upscale"} <= set(PACKS)
    found = []
    for pack in PACKS:
        others = tuple(f"nodes.{p}" for p in PACKS if p != pack)
        for path in sorted((ROOT / "nodes" / pack).rglob("*.py")):
            found += [(path.relative_to(ROOT).as_posix(), line, name) for line, name in _imported_modules(path)
                      if name in others or name.startswith(tuple(o + "." for o in others))]
    assert found == []
