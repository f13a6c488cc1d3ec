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


def test_the_editor_offers_subgraph_components_from_the_folder_next_to_workflows(qtbot, tmp_path):
    """A component in X/subgraphs/ is in the node search of a workflow opened from X/workflows/,
    like an installed node, and an instance of it validates (its definition comes from the library)."""
    from gui.app import build_registry
    from nodegraph import Graph
    from nodegraph.subgraph import extract
    from nodegraph.workflow import save_subgraph_file

    src = Graph()
    src.add_node("primitives.int", {"value": 3}, id="n")
    src.add_node("primitives.int_math", {"op": "add"}, id="m")
    src.connect("n", "INT", "m", "a")
    extract(src, build_registry(), ["m"], "adder", name="Adder Component")
    (tmp_path / "proj" / "subgraphs").mkdir(parents=True)
    (tmp_path / "proj" / "workflows").mkdir()
    save_subgraph_file(src, "adder", tmp_path / "proj" / "subgraphs" / "adder.json")
    wf = tmp_path / "proj" / "workflows" / "w.json"
    wf.write_text(dump_workflow_text(Graph()))
    win = _window(tmp_path, str(wf))
    qtbot.addWidget(win)
    try:
        win.view.search.open()
        win.view.search.edit.setText("Adder Comp")
        assert win.view.search.results()[0] == "subgraph:adder"
        win.view.search.hide()
        nid = win.view.add_node("subgraph:adder", win.view.mapToScene(50, 50))
        assert win.scene.node_items[nid].spec.display_name == "Adder Component"
        assert [i.name for i in win.scene.node_items[nid].spec.inputs] == ["a"]
        assert not [p for p in win.revalidate() if p.node_id == nid and "unknown" in p.message]
    finally:
        win.undo.setClean()
        win.shutdown()


def test_first_window_size_fits_a_small_screen():
    """On a 1366×768 laptop the window must not start taller or wider than the free screen area
    (the status bar and right-hand panels were cut off); on a big screen it keeps its preferred size."""
    from PySide6.QtCore import QRect

    from gui.main_window import DECORATION_MARGIN, PREFERRED_SIZE, initial_size

    class Screen:
        def __init__(self, w: int, h: int) -> None:
            self.rect = QRect(0, 0, w, h)

        def availableGeometry(self) -> QRect:  # noqa: N802 (Qt's name)
            return self.rect

    w, h = initial_size(Screen(1366, 740))  # 768 minus a 28 px panel
    assert w <= 1366 and h + DECORATION_MARGIN <= 740
    assert initial_size(Screen(2560, 1400)) == PREFERRED_SIZE
    assert initial_size(None) == PREFERRED_SIZE
