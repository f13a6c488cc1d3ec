"""Start-up: ``main``'s window factory opens the given workflow, falls back to
the default txt2img graph, and searches nodes fuzzily."""

from __future__ import annotations

from PySide6.QtCore import QSettings

from gui.search import PortFilter, fuzzy_score, search
from nodegraph import dump_workflow_text

from .test_run import chain


def _window(tmp_path, workflow=None):
    from gui.app import create_window, make_app

    make_app()
    return create_window(workflow, output_dir=str(tmp_path / "out"), recover=False,
                         recovery_path=tmp_path / "rec.json",
                         qsettings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))


def test_create_window_opens_workflow_or_default(qtbot, tmp_path):
    wf = tmp_path / "w.json"
    wf.write_text(dump_workflow_text(chain()))
    win = _window(tmp_path, str(wf))
    qtbot.addWidget(win)
    try:
        assert set(win.graph.nodes) == {"a", "b", "s"} and win.path == wf
        assert "w.json" in win.windowTitle()
    finally:
        win.shutdown()
    win2 = _window(tmp_path)
    qtbot.addWidget(win2)
    try:
        types = {n.type for n in win2.graph}
        assert {"diffusion.checkpoint_loader", "diffusion.ksampler", "image.save"} <= types
    finally:
        win2.shutdown()


def test_missing_file_reports_instead_of_crashing(qtbot, tmp_path):
    win = _window(tmp_path, str(tmp_path / "nope.json"))
    qtbot.addWidget(win)
    try:
        assert "not found" in win.last_error
        assert any(n.type == "diffusion.ksampler" for n in win.graph)  # default graph instead
    finally:
        win.shutdown()


def test_fuzzy_search_ranks_and_filters(registry):
    assert fuzzy_score("ksa", "KSampler") > (fuzzy_score("ksa", "Mask Sampler Advanced") or -1e9)
    assert fuzzy_score("xyz", "KSampler") is None
    ranked = [s.type_id for s in search(registry, "sfil")]
    assert ranked[0] == "test.slow_filter"
    by_cat = [s.type_id for s in search(registry, "math")]
    assert {"primitives.int_math", "primitives.float_math"} <= set(by_cat[:3])
    takes_string = search(registry, "", PortFilter("out", "STRING"))
    assert all(any(i.type in ("STRING", "*") for i in s.inputs) for s in takes_string)
    gives_int = {s.type_id for s in search(registry, "", PortFilter("in", "INT"))}
    assert "primitives.int" in gives_int and "test.prompt" not in gives_int
