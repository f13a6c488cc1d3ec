"""One end-to-end run of the shipped txt2img workflow on the demo model, through
the editor's worker thread: states, sampler preview, saved image in the gallery,
and the PNG it wrote opens back as the same workflow.  Skipped without the model."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QSettings

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "nodes" / "diffusion" / "demo_models" / "checkpoints" / "nodegraph-shapes-v1.safetensors"
WORKFLOW = ROOT / "workflows" / "txt2img.json"

pytestmark = pytest.mark.skipif(not (DEMO.is_file() and WORKFLOW.is_file()), reason="demo model not built")


def test_txt2img_runs_in_the_editor_and_its_png_reopens(qtbot, tmp_path):
    pytest.importorskip("torch")
    import torch

    from gui.app import build_registry
    from gui.main_window import MainWindow

    torch.set_num_threads(1)
    registry = build_registry()
    win = MainWindow(registry, output_dir=tmp_path / "out", recovery_path=tmp_path / "rec.json",
                     qsettings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(win)
    try:
        assert win.open_path(WORKFLOW, ask=False)
        sampler = next(n.id for n in win.graph if n.type == "diffusion.ksampler")
        win.scene.set_value(sampler, "steps", 2)
        win.run()
        qtbot.waitUntil(lambda: win.last_report is not None, timeout=120_000)
        assert win.last_report.status == "ok", win.last_report.error
        assert win.scene.states[sampler] == "executed"
        assert win.scene.node_items[sampler].preview is not None
        assert len(win.gallery.entries) == 1
        png = win.gallery.entries[0].path
        steps_run = win.graph.node(sampler).values["steps"]
        assert win.open_path(png, ask=False)
        assert win.graph.node(sampler).values["steps"] == steps_run == 2
    finally:
        win.undo.setClean()
        win.shutdown()
