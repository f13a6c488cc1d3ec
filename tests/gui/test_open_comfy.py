"""The editor opens ComfyUI workflows through the engine's importer (placeholders kept)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "comfy" / "fixtures"


def test_opening_a_comfyui_ui_workflow_imports_it_as_untitled(window, tmp_path: Path) -> None:
    src = tmp_path / "comfy_ui.json"
    shutil.copy(FIXTURES / "all_nodes_ui.json", src)
    assert window.open_path(src, ask=False)
    doc = json.loads(src.read_text())
    assert len(window.graph.nodes) >= len([n for n in doc["nodes"] if n["type"] not in ("Reroute", "PrimitiveNode",
                                                                                        "Note")]) - 1
    assert any(n.type.startswith("comfy:") for n in window.graph)  # the unmappable node is a visible placeholder
    assert window.path is None  # saving must not overwrite the ComfyUI file
    assert "comfy" in window.last_info.lower() or "import" in window.last_info.lower()


CRASHERS = sorted((Path(__file__).resolve().parents[1] / "reliability" / "fixtures").glob("*.json"))


def test_files_that_crashed_the_readers_give_a_dialog_or_open(window) -> None:
    """The editor opens through the same ``open_any`` as the CLI: a damaged file is one error dialog
    (the reader used to raise TypeError/KeyError/OverflowError here, which aborted the editor)."""
    assert CRASHERS
    for path in CRASHERS:
        window.last_error = ""
        opened = window.open_path(path, ask=False)
        assert opened or (str(path) in window.last_error and "Traceback" not in window.last_error), path.name
