"""A file-level mutation fuzzer for workflow files (shared by the fuzz tests and by hand runs).

Real files are mutated the way hostile or broken files differ from good ones:
structural edits (delete a key, swap a value for one of the wrong type or an
extreme one, duplicate a list element, nest deeply) and byte edits of the JSON
text (flip, cut, insert).  Everything is driven by one ``random.Random`` so a
crash is reproduced from its seed, and the crashing bytes can be saved as a
fixture.

Run by hand to hunt for crashes (writes each crashing file to the folder given)::

    python -m tests.reliability.mutator 20000 /tmp/crashes
"""

from __future__ import annotations

import copy
import json
import random
import re
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SEEDS = sorted([*(ROOT / "tests" / "comfy" / "fixtures").glob("*.json"), *(ROOT / "workflows").glob("*.json")])

# Values a hostile or corrupt file puts where something else is expected.
HOSTILE: list[Any] = [
    None, True, False, 0, -1, 1, 2, 7, 2**31, 2**63, 2**64 + 1, 10**30, -(10**30), 0.5, -0.0, 1e308, -1e308,
    float("inf"), float("-inf"), float("nan"), "", "0", "1", "-1", "x", "KSampler", "\u202eevil", "a\x00b",
    "../../etc/x", [], {}, [0], [1, 0], [None, None], ["1", 0], [1, 2, 3, 4, 5, 6], {"0": 1}, {"name": 1},
    {"link": 1}, {"widget": {"name": 3}}, [[[[[]]]]], {"id": 1}, "nan",
]


# Byte strings spliced into files: long numbers, deep nesting, lone surrogates, non-standard constants.
_INSERTS = [b"9" * 30, b"[" * 200, b'[{"a":' * 3000, b'"\\ud800"', b"NaN", b"-Infinity", b",,"]


def _paths(doc: Any, limit: int = 4000) -> list[list[Any]]:
    """Every path (list of keys/indices) into ``doc``, iteratively (files can be deep)."""
    out: list[list[Any]] = []
    stack: list[tuple[list[Any], Any]] = [([], doc)]
    while stack and len(out) < limit:
        path, cur = stack.pop()
        if path:
            out.append(path)
        if isinstance(cur, dict):
            stack.extend((path + [k], v) for k, v in cur.items())
        elif isinstance(cur, list):
            stack.extend((path + [i], v) for i, v in enumerate(cur))
    return out


def _deep_text(depth: int) -> str:
    """JSON nested ``depth`` levels (built as text: nesting that deep breaks copy/json.dumps)."""
    return '[{"a":' * (depth // 2) + "1" + "}]" * (depth // 2)


def _value(rng: random.Random, old: Any) -> Any:
    r = rng.random()
    if r < 0.6:
        return copy.deepcopy(rng.choice(HOSTILE))
    if r < 0.7:
        return f"__DEEP_{rng.choice([50, 400, 900, 5000])}__"
    if r < 0.8 and isinstance(old, (int, float)) and not isinstance(old, bool):
        return rng.choice([-old, old * 10**12, old + 0.5, str(old), int(old) ^ 1 if old == old else 0])
    if r < 0.9 and isinstance(old, str):
        return rng.choice([old * 3, old[::-1], old + "\x1b", int(len(old))])
    return {"k": copy.deepcopy(old)} if rng.random() < 0.5 else [copy.deepcopy(old)]


def mutate_doc(doc: Any, rng: random.Random, edits: int | None = None) -> Any:
    """A structurally mutated deep copy of ``doc``."""
    doc = copy.deepcopy(doc)
    for _ in range(edits or rng.randint(1, 4)):
        paths = _paths(doc)
        if not paths:
            return rng.choice(HOSTILE)
        path = rng.choice(paths)
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        key = path[-1]
        action = rng.random()
        if action < 0.25:
            del parent[key]
        elif action < 0.85:
            parent[key] = _value(rng, parent[key])
        elif isinstance(parent, list):
            parent.insert(rng.randint(0, len(parent)), copy.deepcopy(parent[key]))
        else:
            parent[str(rng.choice(HOSTILE))] = copy.deepcopy(parent[key])
    return doc


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """Byte-level damage: flips, cuts and insertions."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not buf:
            break
        pos = rng.randrange(len(buf))
        action = rng.random()
        if action < 0.4:
            buf[pos] = rng.choice(b'{}[],:"0123456789-eE.\\ntfa\x00\xff')
        elif action < 0.6:
            del buf[pos:pos + rng.randint(1, 40)]
        elif action < 0.8:
            buf[pos:pos] = rng.choice(_INSERTS)
        else:
            del buf[pos:]
    return bytes(buf)


def _png_with(text: str, key: str) -> bytes:
    """A 2x2 PNG carrying ``text`` in a ``key`` text chunk, as ComfyUI and nodegraph embed workflows."""
    import io

    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(key, text, zip=len(text) > 2000)
    buf = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def mutated_file(rng: random.Random, seeds: list[Path] = SEEDS) -> bytes:
    """One mutated file (bytes) from a random seed file: JSON, or (1 in 8) a PNG embedding it."""
    seed = rng.choice(seeds)
    doc = json.loads(seed.read_text(encoding="utf-8"))
    if rng.random() < 0.125:
        text = json.dumps(mutate_doc(doc, rng), allow_nan=True)
        text = re.sub(r'"__DEEP_(\d+)__"', lambda m: _deep_text(int(m.group(1))), text)
        key = "prompt" if "class_type" in text[:200] and rng.random() < 0.7 else "workflow"
        return _png_with(text, key)
    if rng.random() < 0.8:
        text = json.dumps(mutate_doc(doc, rng), allow_nan=True)
        text = re.sub(r'"__DEEP_(\d+)__"', lambda m: _deep_text(int(m.group(1))), text)
        return text.encode("utf-8", "surrogatepass")
    return mutate_bytes(seed.read_bytes(), rng)


_REGISTRY: list[Any] = []


def registry() -> Any:
    """Every shipped pack (built once: the ComfyUI importer maps onto all of them)."""
    if not _REGISTRY:
        from tests.comfy.helpers import full_registry

        _REGISTRY.append(full_registry())
    return _REGISTRY[0]


def open_checked(path: Path) -> Exception | None:
    """Open ``path`` as the CLI and the editor do, then snapshot, validate and save what loaded (as
    ``nodegraph validate`` and the editor's Save do); anything but ``WorkflowFileError`` propagates,
    and a save must be standard JSON that loads back.  Returns the ``WorkflowFileError``, if any."""
    from nodegraph.comfy import missing_models
    from nodegraph.errors import WorkflowFileError
    from nodegraph.open import open_any
    from nodegraph.plan import validate
    from nodegraph.workflow import dumps, loads

    try:
        graph, _notes = open_any(path)
    except WorkflowFileError as exc:
        return exc
    graph.copy()  # what every run (executor, editor worker, batch) starts with
    missing_models(graph, registry(), {"include_demo_models": False})
    assert isinstance(validate(graph, registry(), scope="all", settings={"include_demo_models": False}), list)
    text = dumps(graph)
    json.loads(text, parse_constant=_no_constant)
    loads(text)
    return None


def _no_constant(name: str) -> Any:
    raise AssertionError(f"saved workflow contains non-standard JSON {name}")


def hunt(count: int, out_dir: Path, seed: int = 0) -> dict[str, int]:
    """Open ``count`` mutated files; save each crashing one; return crash counts by site."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sites: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "wf.json"
        for i in range(count):
            rng = random.Random(seed * 1_000_003 + i)
            path.write_bytes(mutated_file(rng))
            try:
                open_checked(path)
            except Exception as exc:  # noqa: BLE001 - collecting crashes is the point
                frame = traceback.extract_tb(exc.__traceback__)[-1]
                site = f"{type(exc).__name__} {Path(frame.filename).name}:{frame.lineno}"
                if site not in sites:
                    (out_dir / f"crash_{len(sites):02d}.json").write_bytes(path.read_bytes())
                    print(f"{i}: {site}: {str(exc)[:120]}", file=sys.stderr)
                sites[site] = sites.get(site, 0) + 1
    return sites


if __name__ == "__main__":  # pragma: no cover - a hand tool

    print(hunt(int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0))
