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
        # the device-memory line the sampler published (budget unlimited on CPU by default)
        assert "memory: device" in win.status_label.text() and "unlimited" in win.status_label.text()
        assert len(win.gallery.entries) == 1
        png = win.gallery.entries[0].path
        steps_run = win.graph.node(sampler).values["steps"]
        assert win.open_path(png, ask=False)
        assert win.tabs.count() == 2  # the PNG's workflow opens beside the edited one
        assert win.graph.node(sampler).values["steps"] == steps_run == 2
    finally:
        for ws in win.tabs.workspaces():
            ws.undo.setClean()
        win.shutdown()


def test_hires_pass_converted_to_a_subgraph_keeps_the_cache_and_edits_inside_rerun(qtbot, tmp_path):
    """Wrapping nodes never invalidates the cache (same cache keys): after converting the
    shipped hires pass into a subgraph in the editor, a second run takes every node from
    the cache.  An edit inside the subgraph re-runs only what depends on it, and the
    subgraph node shows the inner sampler's preview."""
    pytest.importorskip("torch")
    import torch

    from gui.app import build_registry
    from gui.main_window import MainWindow
    from nodegraph import NodeFinished

    torch.set_num_threads(1)
    registry = build_registry()
    win = MainWindow(registry, output_dir=tmp_path / "out", recovery_path=tmp_path / "rec.json",
                     qsettings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    win.quiet = True
    qtbot.addWidget(win)
    finished: list[NodeFinished] = []
    win.runner.event.connect(lambda ev, img: finished.append(ev) if isinstance(ev, NodeFinished) else None)

    def run() -> dict[str, str]:
        win.presenter.last_report = None
        finished.clear()
        win.run()
        qtbot.waitUntil(lambda: win.last_report is not None, timeout=180_000)
        assert win.last_report.status == "ok", win.last_report.error
        return {ev.node_id: ev.status for ev in finished}

    try:
        assert win.open_path(ROOT / "workflows" / "hiresfix.json", ask=False)
        for nid in ("sampler", "sampler_hires"):
            win.graph.set_ui(nid, "seed_control", {"seed": "fixed"})
        assert set(run().values()) == {"executed"}

        win.subgraph_actions.ask_subgraph_name = lambda default: "Hires pass"
        win.scene.select_nodes(["upscale_latent", "sampler_hires"])
        inst = win.subgraph_actions.convert_selection()
        assert inst is not None and win.revalidate() == []
        status = run()
        assert f"{inst}/sampler_hires" in status and set(status.values()) == {"cached"}

        assert win.subgraph_actions.open(inst)
        win.scene.set_value("sampler_hires", "steps", 3)
        win.subgraph_actions.go_up()
        status = run()
        assert status[f"{inst}/upscale_latent"] == status["sampler"] == "cached"
        assert status[f"{inst}/sampler_hires"] == status["save"] == "executed"
        assert win.scene.states[inst] == "executed"
        assert win.scene.node_items[inst].preview is not None  # the inner sampler's preview
        assert len(win.gallery.entries) == 2
    finally:
        for ws in win.tabs.workspaces():
            ws.undo.setClean()
        win.shutdown()
